"""The validated config: frozen dataclasses the whole daemon reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from supervisor.config.addresses import UNIX_SCHEME, is_loopback_host
from supervisor.graph import DependencyGraph

DEFAULT_LISTEN = "127.0.0.1:9180"
DEFAULT_SOCKET_MODE = 0o660
DEFAULT_EVENTS_KEEP = 1000
MIN_TOKEN_LENGTH = 16
RESERVED_LABEL_PREFIX = "io.ovpn-supervisor."
# `\Z`, not `$`: `$` also matches before a trailing newline, which Docker then refuses.
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")
PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*\Z")


class ServiceType(StrEnum):
    """A long-running service, or a job that runs once to completion."""

    SERVICE = "service"
    JOB = "job"


class Condition(StrEnum):
    """What a dependency must reach before its dependent starts."""

    STARTED = "started"
    HEALTHY = "healthy"
    COMPLETED = "completed"


class RestartPolicy(StrEnum):
    """When the supervisor restarts a container."""

    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"


class PullPolicy(StrEnum):
    """When the image is pulled before creating a container."""

    MISSING = "missing"
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class HttpProbe:
    """HTTP(S) GET; healthy on 2xx. Either `port` (+ `path`) on the container, or a full `url`.

    For https, `tls_verify=False` accepts any certificate (a self-signed one) and `ca_file`
    trusts that CA bundle instead of the system's; `ca_digest`, the bundle's sha256, makes a
    changed bundle a changed probe. On the container's address the certificate's name is not
    checked (certificates do not name container IPs); with a `url` it is.
    """

    port: int | None = None
    path: str = "/health"
    url: str | None = None
    scheme: Literal["http", "https"] = "http"
    tls_verify: bool = True
    ca_file: Path | None = None
    ca_digest: str | None = None


@dataclass(frozen=True, slots=True)
class TcpProbe:
    """Healthy when a TCP connect to the container's `port` succeeds."""

    port: int


@dataclass(frozen=True, slots=True)
class ExecProbe:
    """Healthy when `command` exits 0 inside the container."""

    command: tuple[str, ...]


Probe = HttpProbe | TcpProbe | ExecProbe


@dataclass(frozen=True, slots=True)
class HealthTiming:
    """Probe timing; `start_interval` is the fast probing pace inside `start_period`."""

    interval: float = 10.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 30.0
    start_interval: float = 0.1


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """A service's health probe and its timing."""

    probe: Probe
    interval: float = 10.0
    timeout: float = 3.0
    retries: int = 3
    start_period: float = 30.0
    start_interval: float = 0.1


@dataclass(frozen=True, slots=True)
class RestartConfig:
    """Restart policy, exponential backoff, and the crash-loop limit (count within window)."""

    policy: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    # The delay of the first restart after a run longer than `reset_after` (as Kubernetes
    # does): a long-lived service that crashes once comes back at once.
    backoff_first: float = 0.0
    limit_count: int = 10
    limit_window: float = 600.0
    reset_after: float = 600.0


@dataclass(frozen=True, slots=True)
class StopConfig:
    """Signal sent to stop the container, and how long to wait before SIGKILL."""

    signal: str = "SIGTERM"
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class VolumeMount:
    """A named volume (source = config name) or a bind mount (source = absolute host path)."""

    kind: Literal["volume", "bind"]
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class PortMapping:
    """A container port published on the host; host_port None lets Docker pick one."""

    container_port: int
    host_port: int | None = None
    host_ip: str | None = None
    protocol: Literal["tcp", "udp"] = "tcp"


@dataclass(frozen=True, slots=True)
class Dependency:
    """One depends_on entry; `restart` restarts the dependent when this dependency restarts."""

    condition: Condition = Condition.STARTED
    restart: bool = False


@dataclass(frozen=True, slots=True)
class BackupConfig:
    """`backup:` of a service: `exec` runs inside its container, stdout is the backup."""

    exec: tuple[str, ...]
    keep: int = 7


@dataclass(frozen=True, slots=True)
class RestoreConfig:
    """`restore:` of a service: `exec` runs inside its container with a backup on stdin."""

    exec: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpdateSchedule:
    """`update:` automatic image updates: every `every` seconds, anchored at `at` (HH:MM)."""

    every: float
    at: tuple[int, int] | None = None  # local hour and minute
    pull: bool = True


def _frozen_map(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))


def _empty_map() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """One service's effective config (defaults applied, env files merged)."""

    name: str
    image: str
    type: ServiceType = ServiceType.SERVICE
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=_empty_map)
    env_files: tuple[Path, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
    networks: tuple[str, ...] = ("default",)
    ports: tuple[PortMapping, ...] = ()
    user: str | None = None
    working_dir: str | None = None
    depends_on: Mapping[str, Dependency] = field(default_factory=_empty_map)
    health: HealthConfig | None = None
    restart: RestartConfig = field(default_factory=RestartConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    pull: PullPolicy = PullPolicy.MISSING
    secrets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=_empty_map)
    backup: BackupConfig | None = None
    restore: RestoreConfig | None = None

    def __post_init__(self) -> None:
        # Shared across tasks: never let a caller's dict be mutated behind our back.
        for name in ("environment", "depends_on", "labels"):
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """A project network; `name` is its Docker name when not `<project>-<key>`.

    `name` gives a network a fixed Docker name that other stacks attach to; an existing
    network of that name is joined as it is.
    """

    internal: bool = False
    driver: str = "bridge"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class VolumeConfig:
    """A project named volume; `name` is its Docker name when not `<project>-<key>`.

    `name` lets a stack take over volumes it did not create (a Compose deployment's
    `<project>_<key>`), so moving to the supervisor keeps the databases' data.
    """

    driver: str = "local"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SecretConfig:
    """A file-backed secret; `digest` is the sha256 of its contents when loaded."""

    file: Path
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The status API: "host:port" or "unix:///path"; optional bearer token file.

    `socket_mode` / `socket_group` apply to a unix socket only (its permissions are the gate).
    """

    listen: str = DEFAULT_LISTEN
    token_file: Path | None = None
    socket_mode: int = DEFAULT_SOCKET_MODE
    socket_group: str | None = None
    events_keep: int = DEFAULT_EVENTS_KEEP  # api.events.keep: the event history's length
    # Host names (besides loopback names, IP literals and the listen host) the API answers to.
    allowed_hosts: tuple[str, ...] = ()
    # The token file's contents, hashed: a new token is a change a reload must mention.
    token_digest: str | None = field(default=None, repr=False)

    @property
    def unix_path(self) -> Path | None:
        """The socket's path for a unix:// address, else None."""
        return (
            Path(self.listen[len(UNIX_SCHEME) :]) if self.listen.startswith(UNIX_SCHEME) else None
        )

    @property
    def loopback(self) -> bool:
        """True for a unix socket or a TCP address on the loopback interface."""
        return self.unix_path is not None or is_loopback_host(self.listen.rpartition(":")[0])


@dataclass(frozen=True, slots=True)
class SystemdConfig:
    """How the daemon talks to systemd: READY=1 comes at the latest after `startup_timeout`."""

    startup_timeout: float = 300.0


@dataclass(frozen=True, slots=True)
class Defaults:
    """Stack-wide defaults that each service overrides key by key."""

    health: HealthTiming = field(default_factory=HealthTiming)
    restart: RestartConfig = field(default_factory=RestartConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    pull: PullPolicy = PullPolicy.MISSING


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """The whole validated config."""

    version: int = 1
    project: str
    api: ApiConfig = field(default_factory=ApiConfig)
    systemd: SystemdConfig = field(default_factory=SystemdConfig)
    defaults: Defaults = field(default_factory=Defaults)
    networks: Mapping[str, NetworkConfig] = field(default_factory=_empty_map)
    volumes: Mapping[str, VolumeConfig] = field(default_factory=_empty_map)
    secrets: Mapping[str, SecretConfig] = field(default_factory=_empty_map)
    services: Mapping[str, ServiceConfig] = field(default_factory=_empty_map)
    source: Path | None = None
    update: UpdateSchedule | None = None  # None: no automatic updates
    backups_dir: Path = Path("backups")  # absolute once loaded: next to the config by default

    def __post_init__(self) -> None:
        for name in ("networks", "volumes", "secrets", "services"):
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))

    def graph(self) -> DependencyGraph:
        """The services' dependency graph."""
        return DependencyGraph({n: s.depends_on.keys() for n, s in self.services.items()})
