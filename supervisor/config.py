"""YAML config -> frozen, validated `StackConfig`.

Every problem names its key path and, where the YAML says, its line; all problems are collected
and raised together as one `ConfigError`, so an operator fixes a file in one pass.

Hand-written checks over the parsed YAML rather than pydantic: the config has many short forms
(ports, volumes, depends_on, durations) that need custom parsing anyway, and walking the data
ourselves gives each problem the exact key path and line with no error-shape mapping.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import math
import os
import re
import shlex
import signal
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum, StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

from supervisor.graph import DependencyGraph
from supervisor.yaml_bounds import describe_yaml_error, load_bounded

__all__ = [
    "ApiConfig",
    "BackupConfig",
    "Condition",
    "ConfigError",
    "ConfigProblem",
    "Defaults",
    "Dependency",
    "ExecProbe",
    "HealthConfig",
    "HealthTiming",
    "HttpProbe",
    "NetworkConfig",
    "PortMapping",
    "Probe",
    "PullPolicy",
    "RestartConfig",
    "RestartPolicy",
    "RestoreConfig",
    "SecretConfig",
    "ServiceConfig",
    "ServiceType",
    "StackConfig",
    "StopConfig",
    "SystemdConfig",
    "UpdateSchedule",
    "VolumeConfig",
    "VolumeMount",
    "config_hash",
    "container_hash",
    "load_api_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_env_file",
]

DEFAULT_LISTEN = "127.0.0.1:9180"
DEFAULT_SOCKET_MODE = 0o660
DEFAULT_EVENTS_KEEP = 1000
MIN_TOKEN_LENGTH = 16
UNIX_SCHEME = "unix://"
RESERVED_LABEL_PREFIX = "io.ovpn-supervisor."
# `\Z`, not `$`: `$` also matches before a trailing newline, which Docker then refuses.
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")
PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*\Z")


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the config, located by key path and (if known) file and line."""

    path: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        subject = f"{self.path}: " if self.path else ""
        return f"{where}{subject}{self.message}"


class ConfigError(Exception):
    """The config is invalid; `problems` lists every problem found."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ("h", "m", "s", "ms")
DURATION_HINT = "(use e.g. 500ms, 10s, 5m)"
_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86400.0
# (section, key) -> (shortest, longest) in seconds. Intervals below 100 ms would probe in a busy
# loop; a day or a week is longer than anyone means and keeps timers far from overflow.
_DURATION_BOUNDS: dict[tuple[str, ...], tuple[float, float]] = {
    ("health", "interval"): (0.1, _DAY),
    ("health", "timeout"): (0.1, _HOUR),
    ("health", "start_period"): (0.0, _DAY),
    ("health", "start_interval"): (0.1, _HOUR),
    ("backoff", "initial"): (0.01, _HOUR),
    ("backoff", "max"): (0.01, _DAY),
    ("backoff", "first"): (0.0, _HOUR),
    ("limit", "window"): (1.0, 7 * _DAY),
    ("restart", "reset_after"): (1.0, 7 * _DAY),
    ("stop", "timeout"): (0.0, _HOUR),
    ("systemd", "startup_timeout"): (1.0, _DAY),
}
_DEFAULT_BOUNDS = (0.0, _DAY)


def _show(seconds: float) -> str:
    """A bound as the operator would write it: 100ms, 1s, 168h."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", _HOUR), ("m", _MINUTE), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def parse_duration(value: object) -> float:
    """Seconds in a duration such as "500ms", "10s", "5m", "1h", "1m30s" or "1.5s".

    Bare numbers are refused: "10" could mean seconds or milliseconds, so the unit is required.
    """
    error = ValueError(f"invalid duration {value!r} {DURATION_HINT}")
    if not isinstance(value, str) or not value:
        raise error
    total = 0.0
    position = 0
    last_unit = -1
    for match in _DURATION_RE.finditer(value):
        unit = _UNIT_ORDER.index(match.group(2))
        # Units must appear once each, largest first ("1m30s", not "30s1m").
        if match.start() != position or unit <= last_unit:
            raise error
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
        last_unit = unit
    if position != len(value) or not math.isfinite(total):
        raise error
    return total


# --------------------------------------------------------------------------- model


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


# --------------------------------------------------------------------------- hashing

_HASH_SCHEMA = "ovpn-supervisor/config-hash/1"


def _canonical(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        # Hashing must not crash the reconciler; an unreadable file still hashes differently.
        return f"unreadable:{exc.errno}"


# How the daemon supervises a container, not what the container is: a change here is applied
# to the running service without recreating its container.
SUPERVISION_KEYS = ("health", "restart", "depends_on", "pull", "backup", "restore")


def container_hash(stack: StackConfig, service: ServiceConfig) -> str:
    """Like `config_hash`, without the supervision-only keys: what the container label carries."""
    return config_hash(stack, service, without=SUPERVISION_KEYS)


def config_hash(stack: StackConfig, service: ServiceConfig, *, without: Iterable[str] = ()) -> str:
    """Stable 16-hex-digit hash of all that shapes the service's container.

    Covers the service's effective config (env-file contents are already in `environment`),
    the definitions of its networks, and the contents of its secret files.
    """
    body = _canonical(service)
    assert isinstance(body, dict)
    # The files' paths do not matter once their contents are merged into `environment`.
    body.pop("env_files", None)
    for key in without:
        body.pop(key, None)
    document = {
        "schema": _HASH_SCHEMA,
        "service": body,
        "networks": {
            name: _canonical(stack.networks.get(name, NetworkConfig())) for name in service.networks
        },
        # Which Docker volume a mount gets is part of the container.
        "volumes": {
            m.source: _canonical(stack.volumes.get(m.source, VolumeConfig()))
            for m in service.volumes
            if m.kind == "volume"
        },
        "secrets": {
            name: _secret_digest(stack.secrets[name]) if name in stack.secrets else None
            for name in service.secrets
        },
    }
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _secret_digest(secret: SecretConfig) -> str:
    return secret.digest if secret.digest is not None else _file_digest(secret.file)


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str]) -> StackConfig:
    """Read and validate a config file; relative paths in it resolve against its folder."""
    source = Path(path).absolute()
    try:
        data = source.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigProblem("", f"cannot read config: {reason}", str(source))]
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ConfigError([ConfigProblem("", message, str(source))]) from exc
    return parse_config(text, source=source, base_dir=source.parent)


def parse_config(
    text: str, *, source: Path | None = None, base_dir: Path | None = None
) -> StackConfig:
    """Validate config text; `base_dir` (default: source's folder, else cwd) anchors paths."""
    if base_dir is None:
        base_dir = source.parent if source is not None else Path.cwd()
    parser = _Parser(source, Path(base_dir).absolute())
    stack = parser.parse(text)
    if parser.problems or stack is None:
        raise ConfigError(parser.problems)
    return stack


def load_api_config(path: str | os.PathLike[str]) -> ApiConfig:
    """Read only the `api` section of a config file (for the CLI); ConfigError if invalid."""
    source = Path(path).absolute()
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("", f"cannot read config: {exc}", str(source))]) from exc
    parser = _Parser(source, source.parent)
    api = parser.parse_api(text)
    if parser.problems:
        # A file broken elsewhere may still say where the daemon listens: `reload` must reach
        # the daemon to have the broken config refused (and the refusal shown) there.
        salvaged = _api_block(text)
        if salvaged is not None:
            retry = _Parser(source, source.parent)
            api = retry.parse_api(salvaged)
            if not retry.problems:
                return api
        raise ConfigError(parser.problems)
    return api


def _api_block(text: str) -> str | None:
    """The top-level `api:` block of a config on its own, if it has one."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if re.match(r"^api\s*:", line):
            end = start + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
                end += 1
            return "\n".join(lines[start:end]) + "\n"
    return None


# Key paths: mapping keys as str, sequence indexes as int.
KeyPath = tuple[str | int, ...]
_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)

_MERGE_TAG = "tag:yaml.org,2002:merge"


def format_path(path: KeyPath) -> str:
    """`("services", "x", "env_file", 0)` -> "services.x.env_file[0]"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TOP_KEYS = (
    "version",
    "project",
    "api",
    "systemd",
    "defaults",
    "networks",
    "volumes",
    "secrets",
    "services",
    "update",
    "backups",
)
_SERVICE_KEYS = (
    "image",
    "type",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "volumes",
    "networks",
    "ports",
    "user",
    "working_dir",
    "depends_on",
    "health",
    "restart",
    "stop",
    "pull",
    "secrets",
    "labels",
    "backup",
    "restore",
)
_TIMING_KEYS = ("interval", "timeout", "retries", "start_period", "start_interval")
_PROBE_KEYS = ("http", "tcp", "exec")
# Compose spellings people will bring along, pointed at ours.
_KEY_HINTS = {
    "healthcheck": "health",
    "env_files": "env_file",
    "stop_signal": "stop.signal",
    "stop_grace_period": "stop.timeout",
    "pull_policy": "pull",
}


class _Parser:
    """One parse: the YAML's line index, and the problems found so far."""

    def __init__(self, source: Path | None, base_dir: Path) -> None:
        self.source = source
        self.file = str(source) if source is not None else None
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        self.lines: dict[KeyPath, int] = {}
        self.raw: dict[KeyPath, str] = {}

    # ---------------------------------------------------------------- reporting

    def line_of(self, path: KeyPath) -> int | None:
        """Line of the node at `path`, else of its closest ancestor the YAML located."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def problem(self, path: KeyPath, message: str, line: int | None = None) -> None:
        where = line if line is not None else self.line_of(path)
        self.problems.append(ConfigProblem(format_path(path), message, self.file, where))

    # ---------------------------------------------------------------- YAML

    def parse(self, text: str) -> StackConfig | None:
        data = self.document(text)
        return None if data is None else self._stack(data)

    def parse_api(self, text: str) -> ApiConfig:
        """Only the `api` section (the CLI must not need to read the stack's secret files)."""
        data = self.document(text) or {}
        return self._api(self.mapping(data.get("api"), ("api",)))

    def document(self, text: str) -> dict[str, Any] | None:
        """The YAML as a mapping, indexed by key path; None (with a problem) if it is not one."""
        try:
            root, data = load_bounded(text, lambda node: self._index(node, (), set()))
            if root is None:
                self.problem((), "empty config file")
                return None
        except yaml.YAMLError as exc:
            message, line = describe_yaml_error(exc, text)
            self.problem((), message, line)
            return None
        if not isinstance(data, dict):
            self.problem((), f"the top level must be a mapping, got {_kind(data)}")
            return None
        return data

    def _index(self, node: yaml.Node, path: KeyPath, active: set[int]) -> None:
        """Record each node's line and raw scalar text; report duplicate keys."""
        if id(node) in active:  # a recursive alias; construction will reject or loop-guard it
            return
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            self.raw[path] = str(node.value)
            return
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._index(item, (*path, index), active)
        elif isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    # Merged keys live at this same path; explicit keys (indexed below) win.
                    merged = (
                        value_node.value
                        if isinstance(value_node, yaml.SequenceNode)
                        else [value_node]
                    )
                    for source in merged:
                        self._index_merged(source, path, active)
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in first_line:
                    self.problem(
                        (*path, key),
                        f"duplicate key (first defined at line {first_line[key]})",
                        line,
                    )
                else:
                    first_line[key] = line
                # The last occurrence is the one PyYAML keeps, so it owns the path's line.
                self.lines[(*path, key)] = line
                self._index(value_node, (*path, key), active)

    def _index_merged(self, node: yaml.Node, path: KeyPath, active: set[int]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    self.lines.setdefault(
                        (*path, str(key_node.value)), key_node.start_mark.line + 1
                    )
                    self._index(value_node, (*path, str(key_node.value)), active)

    # ---------------------------------------------------------------- typed readers

    def keys(
        self,
        data: dict[str, Any],
        path: KeyPath,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> None:
        """Report unknown keys (with a close match, if any) and missing required ones."""
        allowed = tuple(allowed)
        for key in data:
            if key in allowed:
                continue
            hint = _KEY_HINTS.get(key) if isinstance(key, str) else None
            if hint is None:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = close[0] if close else None
            suffix = f" (did you mean '{hint}'?)" if hint else ""
            self.problem((*path, str(key)), f"unknown key{suffix}")
        for key in required:
            if key not in data:
                self.problem((*path, key), "missing required key")

    def mapping(self, value: object, path: KeyPath) -> dict[str, Any]:
        """A mapping with string keys; null reads as empty."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_kind(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                out[key] = item
            else:
                self.problem((*path, str(key)), f"keys must be strings, got {_kind(key)}")
        return out

    def seq(self, value: object, path: KeyPath) -> list[Any]:
        """A list; null reads as empty."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {_kind(value)}")
            return []
        return value

    def string(self, value: object, path: KeyPath, default: str = "") -> str:
        if isinstance(value, str):
            return value
        self.problem(path, f"expected a string, got {_kind(value)}")
        return default

    def scalar_text(self, value: object, path: KeyPath) -> str | None:
        """A scalar as the text the operator wrote (so 0755 stays "0755"); null -> ""."""
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return self.raw.get(path, str(value))
        self.problem(path, f"expected a string, got {_kind(value)}")
        return None

    def integer(
        self,
        value: object,
        path: KeyPath,
        default: int,
        low: int | None = None,
        high: int | None = None,
    ) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(path, f"expected an integer, got {_kind(value)}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            self.problem(path, f"must be {bounds}, got {value}")
            return default
        return value

    def boolean(self, value: object, path: KeyPath, default: bool = False) -> bool:
        if isinstance(value, bool):
            return value
        self.problem(path, f"expected true or false, got {_kind(value)}")
        return default

    def duration(
        self, value: object, path: KeyPath, default: float, positive: bool = True
    ) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return default
        if positive and seconds <= 0:
            self.problem(path, f"must be longer than 0, got {value!r}")
            return default
        # Too short makes a busy loop, too long overflows timers: each key has its range.
        low, high = _DURATION_BOUNDS.get(tuple(str(p) for p in path[-2:]), _DEFAULT_BOUNDS)
        if not low <= seconds <= high:
            self.problem(path, f"must be between {_show(low)} and {_show(high)}, got {value!r}")
            return default
        return seconds

    def choice(self, value: object, path: KeyPath, enum: type[_E], default: _E) -> _E:
        # YAML 1.1 reads a bare `no` as false; restart `policy: no` still means "no".
        if value is False and "no" in enum._value2member_map_:
            return enum("no")
        if isinstance(value, str) and value in enum._value2member_map_:
            return enum(value)
        accepted = ", ".join(m.value for m in enum)
        self.problem(path, f"invalid value {value!r} (one of: {accepted})")
        return default

    def name(self, value: object, path: KeyPath, what: str) -> str | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a {what} name, got {_kind(value)}")
            return None
        return value

    def resolve(self, value: str) -> Path:
        """A path from the config, absolute: `~` expanded, relative to the config's folder."""
        # normpath, not resolve(): keep the operator's symlinks as written.
        return Path(os.path.normpath(self.base_dir / Path(value).expanduser()))

    def optional(
        self, data: dict[str, Any], key: str, path: KeyPath, read: Callable[[object, KeyPath], _T]
    ) -> _T | None:
        """`read` the key if present and not null."""
        value = data.get(key)
        return None if value is None else read(value, (*path, key))

    # ---------------------------------------------------------------- top level

    def _stack(self, data: dict[str, Any]) -> StackConfig | None:
        data = self.mapping(data, ())
        self.keys(data, (), _TOP_KEYS, required=("version", "project"))
        version = 1
        if "version" in data:
            version = self.integer(data["version"], ("version",), 1)
            if version != 1:
                self.problem(("version",), f"unsupported version {version} (only 1 is known)")
        project = ""
        if "project" in data:
            project = self.string(data["project"], ("project",))
            if project and not PROJECT_RE.match(project):
                self.problem(
                    ("project",),
                    f"invalid project name {project!r} "
                    "(lowercase letters, digits, '_', '.', '-'; starting with a letter or digit)",
                )
        api = self._api(self.mapping(data.get("api"), ("api",)))
        if api.token_file is not None:
            api = replace(api, token_digest=self._check_token_file(api.token_file))
        systemd = self._systemd(self.mapping(data.get("systemd"), ("systemd",)))
        defaults = self._defaults(self.mapping(data.get("defaults"), ("defaults",)))
        networks = self._named(data, "networks", self._network)
        volumes = self._named(data, "volumes", self._volume)
        secrets = self._named(data, "secrets", self._secret)

        raw_services = self.mapping(data.get("services"), ("services",))
        services: dict[str, ServiceConfig] = {}
        for name, body in raw_services.items():
            path: KeyPath = ("services", name)
            if not NAME_RE.match(name):
                self.problem(
                    path,
                    f"invalid service name {name!r} "
                    "(letters, digits, '_', '.', '-'; starting with a letter or digit)",
                )
            services[name] = self._service(name, self.mapping(body, path), path, defaults)

        self._check_references(services, networks, volumes, secrets)
        self._check_dependencies(services)
        self._check_ports(services)
        update = self._update(data.get("update"), ("update",))
        backups = self.mapping(data.get("backups"), ("backups",))
        self.keys(backups, ("backups",), ("dir",))
        backups_dir = self.optional(backups, "dir", ("backups",), self.string) or "backups"

        if any(s.networks and "default" in s.networks for s in services.values()):
            networks.setdefault("default", NetworkConfig())
        if self.problems:
            return None
        return StackConfig(
            version=version,
            project=project,
            api=api,
            systemd=systemd,
            defaults=defaults,
            networks=networks,
            volumes=volumes,
            secrets=secrets,
            services=services,
            source=self.source,
            update=update,
            backups_dir=self.resolve(backups_dir),
        )

    def _named(
        self, data: dict[str, Any], section: str, read: Callable[[dict[str, Any], KeyPath], _T]
    ) -> dict[str, _T]:
        out: dict[str, _T] = {}
        for name, body in self.mapping(data.get(section), (section,)).items():
            path: KeyPath = (section, name)
            if not NAME_RE.match(name):
                self.problem(path, f"invalid name {name!r}")
            out[name] = read(self.mapping(body, path), path)
        return out

    def _network(self, data: dict[str, Any], path: KeyPath) -> NetworkConfig:
        self.keys(data, path, ("internal", "driver", "name"))
        internal = self.optional(data, "internal", path, self.boolean)
        driver = self.optional(data, "driver", path, self.string)
        name = self.optional(data, "name", path, self.string)
        if name is not None and not NAME_RE.match(name):
            self.problem((*path, "name"), f"invalid Docker network name {name!r}")
        return NetworkConfig(internal=bool(internal), driver=driver or "bridge", name=name or None)

    def _volume(self, data: dict[str, Any], path: KeyPath) -> VolumeConfig:
        self.keys(data, path, ("driver", "name"))
        driver = self.optional(data, "driver", path, self.string)
        name = self.optional(data, "name", path, self.string)
        if name is not None and not VOLUME_NAME_RE.match(name):
            self.problem((*path, "name"), f"invalid Docker volume name {name!r}")
        return VolumeConfig(driver=driver or "local", name=name or None)

    def _secret(self, data: dict[str, Any], path: KeyPath) -> SecretConfig:
        self.keys(data, path, ("file",), required=("file",))
        file_value = self.optional(data, "file", path, self.string)
        if not file_value:
            return SecretConfig(file=self.base_dir)
        file = self.resolve(file_value)
        try:
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
        except OSError as exc:
            self.problem((*path, "file"), f"cannot read secret file {str(file)!r}: {_reason(exc)}")
            digest = None
        return SecretConfig(file=file, digest=digest)

    def _api(self, data: dict[str, Any]) -> ApiConfig:
        path: KeyPath = ("api",)
        self.keys(
            data,
            path,
            ("listen", "token_file", "socket_mode", "socket_group", "events", "allowed_hosts"),
        )
        listen = self.optional(data, "listen", path, self.string)
        if listen is not None and not _valid_listen(listen):
            self.problem(
                (*path, "listen"),
                f"invalid address {listen!r} (use HOST:PORT or unix:///absolute/path)",
            )
            listen = None
        token = self.optional(data, "token_file", path, self.string)
        hosts = tuple(
            host.lower()
            for index, host in enumerate(
                self.seq(data.get("allowed_hosts"), (*path, "allowed_hosts"))
            )
            if self._host_name(host, (*path, "allowed_hosts", index))
        )
        api = ApiConfig(
            listen=listen or DEFAULT_LISTEN,
            token_file=self.resolve(token) if token else None,
            events_keep=self._events_keep(data.get("events"), (*path, "events")),
            allowed_hosts=hosts,
        )
        if not api.loopback and api.token_file is None:
            # Anyone on the network could restart the VPN stack: never without a token.
            self.problem(
                (*path, "listen"),
                f"{api.listen!r} is not a loopback address: set api.token_file as well",
            )
        mode, group = data.get("socket_mode"), data.get("socket_group")
        if api.unix_path is None:
            for key in ("socket_mode", "socket_group"):
                if data.get(key) is not None:
                    self.problem((*path, key), "applies only to a unix:///path listen address")
            return api
        return replace(
            api,
            socket_mode=self._socket_mode(mode, (*path, "socket_mode")),
            socket_group=None
            if group is None
            else self.scalar_text(group, (*path, "socket_group")),
        )

    def _events_keep(self, value: object, path: KeyPath) -> int:
        """`api.events: {keep: N}`: how many events the history holds."""
        if value is None:
            return DEFAULT_EVENTS_KEEP
        data = self.mapping(value, path)
        self.keys(data, path, ("keep",))
        keep = data.get("keep")
        if keep is None:
            return DEFAULT_EVENTS_KEEP
        return self.integer(keep, (*path, "keep"), DEFAULT_EVENTS_KEEP, 1, 100_000)

    def _socket_mode(self, value: object, path: KeyPath) -> int:
        """An octal permission such as "0660" (quoted or not); default 0660."""
        if value is None:
            return DEFAULT_SOCKET_MODE
        text = self.scalar_text(value, path) or ""
        if not re.fullmatch(r"0?[0-7]{3}", text):
            self.problem(path, f"invalid mode {text!r} (use an octal mode such as 0660)")
            return DEFAULT_SOCKET_MODE
        mode = int(text, 8)
        if mode & 0o002:
            # The socket needs no token: whoever may write to it may restart the VPN stack.
            self.problem(path, f"mode {text} lets every local user control the daemon (use 0660)")
            return DEFAULT_SOCKET_MODE
        return mode

    def _host_name(self, value: object, path: KeyPath) -> bool:
        if isinstance(value, str) and re.fullmatch(
            r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", value
        ):
            return True
        self.problem(path, f"expected a host name such as vpn.example.org, got {value!r}")
        return False

    def _check_token_file(self, file: Path) -> str | None:
        """The token file exists, is private to its owner and holds a token worth the name.

        Checked by the daemon's full parse (`check`, start, reload), not by the CLI's reading
        of the `api` section: an operator's CLI may not be allowed to read the file.
        """
        path: KeyPath = ("api", "token_file")
        try:
            mode = file.stat().st_mode
            token = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            self.problem(path, f"cannot read token file {str(file)!r}: {reason}")
            return None
        if mode & 0o077:
            self.problem(
                path,
                f"token file {str(file)!r} is open to group or others "
                f"(mode {mode & 0o777:04o}; chmod 600 it)",
            )
        if len(token) < MIN_TOKEN_LENGTH:
            self.problem(
                path,
                f"the token in {str(file)!r} is {len(token)} characters long; use at least "
                f"{MIN_TOKEN_LENGTH} (e.g. `openssl rand -hex 32`)",
            )
        return hashlib.sha256(token.encode()).hexdigest()

    def _systemd(self, data: dict[str, Any]) -> SystemdConfig:
        path: KeyPath = ("systemd",)
        self.keys(data, path, ("startup_timeout",))
        base = SystemdConfig()
        return SystemdConfig(
            startup_timeout=self._dur(data, "startup_timeout", path, base.startup_timeout)
        )

    def _defaults(self, data: dict[str, Any]) -> Defaults:
        path: KeyPath = ("defaults",)
        self.keys(data, path, ("health", "restart", "stop", "pull"))
        health_data = self.mapping(data.get("health"), (*path, "health"))
        self.keys(health_data, (*path, "health"), _TIMING_KEYS)
        health = self._timing(health_data, (*path, "health"), HealthTiming())
        restart = self._restart(data.get("restart"), (*path, "restart"), RestartConfig(), False)
        stop = self._stop(
            self.mapping(data.get("stop"), (*path, "stop")), (*path, "stop"), StopConfig()
        )
        pull = PullPolicy.MISSING
        if data.get("pull") is not None:
            pull = self.choice(data["pull"], (*path, "pull"), PullPolicy, pull)
        return Defaults(health=health, restart=restart, stop=stop, pull=pull)

    # ---------------------------------------------------------------- shared sections

    def _timing(self, data: dict[str, Any], path: KeyPath, base: HealthTiming) -> HealthTiming:
        """The timing keys of `data`, each defaulting to `base`'s."""
        return HealthTiming(
            interval=self._dur(data, "interval", path, base.interval),
            timeout=self._dur(data, "timeout", path, base.timeout),
            retries=self.integer(data["retries"], (*path, "retries"), base.retries, low=1)
            if data.get("retries") is not None
            else base.retries,
            start_period=self._dur(data, "start_period", path, base.start_period, positive=False),
            start_interval=self._dur(data, "start_interval", path, base.start_interval),
        )

    def _dur(
        self, data: dict[str, Any], key: str, path: KeyPath, default: float, positive: bool = True
    ) -> float:
        if data.get(key) is None:
            return default
        return self.duration(data[key], (*path, key), default, positive)

    def _restart(
        self, value: object, path: KeyPath, base: RestartConfig, is_job: bool
    ) -> RestartConfig:
        # Compose's `restart: always` string form is shorthand for {policy: always}.
        if isinstance(value, str | bool):
            value = {"policy": value}
        data = self.mapping(value, path)
        self.keys(data, path, ("policy", "backoff", "limit", "reset_after"))
        policy = RestartPolicy.NO if is_job else base.policy
        if data.get("policy") is not None:
            policy = self.choice(data["policy"], (*path, "policy"), RestartPolicy, policy)
        backoff = self.mapping(data.get("backoff"), (*path, "backoff"))
        self.keys(backoff, (*path, "backoff"), ("first", "initial", "max"))
        limit = self.mapping(data.get("limit"), (*path, "limit"))
        self.keys(limit, (*path, "limit"), ("count", "window"))
        initial = self._dur(backoff, "initial", (*path, "backoff"), base.backoff_initial)
        maximum = self._dur(backoff, "max", (*path, "backoff"), base.backoff_max)
        first = self._dur(backoff, "first", (*path, "backoff"), base.backoff_first, positive=False)
        if maximum < initial:
            self.problem(
                (*path, "backoff", "max" if "max" in backoff else "initial"),
                f"backoff max ({maximum:g}s) is shorter than initial ({initial:g}s)",
            )
        count = base.limit_count
        if limit.get("count") is not None:
            count = self.integer(limit["count"], (*path, "limit", "count"), count, low=1)
        return RestartConfig(
            policy=policy,
            backoff_initial=initial,
            backoff_max=maximum,
            backoff_first=first,
            limit_count=count,
            limit_window=self._dur(limit, "window", (*path, "limit"), base.limit_window),
            reset_after=self._dur(data, "reset_after", path, base.reset_after),
        )

    def _stop(self, data: dict[str, Any], path: KeyPath, base: StopConfig) -> StopConfig:
        self.keys(data, path, ("signal", "timeout"))
        sig = base.signal
        if data.get("signal") is not None:
            sig = self._signal(data["signal"], (*path, "signal"), sig)
        timeout = self._dur(data, "timeout", path, base.timeout, positive=False)
        return StopConfig(signal=sig, timeout=timeout)

    def _signal(self, value: object, path: KeyPath, default: str) -> str:
        try:
            if isinstance(value, int) and not isinstance(value, bool):
                return signal.Signals(value).name
            if isinstance(value, str):
                upper = value.strip().upper()
                return signal.Signals[upper if upper.startswith("SIG") else f"SIG{upper}"].name
        except (ValueError, KeyError):
            pass
        self.problem(path, f"unknown signal {value!r} (use e.g. SIGTERM, TERM or 15)")
        return default

    # ---------------------------------------------------------------- services

    def _service(
        self, name: str, data: dict[str, Any], path: KeyPath, defaults: Defaults
    ) -> ServiceConfig:
        self.keys(data, path, _SERVICE_KEYS, required=("image",))
        image = self.optional(data, "image", path, self.string) or ""
        if isinstance(data.get("image"), str) and not image.strip():
            self.problem((*path, "image"), "must not be empty")
        kind = ServiceType.SERVICE
        if data.get("type") is not None:
            kind = self.choice(data["type"], (*path, "type"), ServiceType, kind)
        is_job = kind is ServiceType.JOB

        env_files = self._env_file_list(data.get("env_file"), (*path, "env_file"))
        environment: dict[str, str] = {}
        for file, file_path in env_files:
            environment.update(self._read_env_file(file, file_path))
        environment.update(self._environment(data.get("environment"), (*path, "environment")))

        networks: tuple[str, ...] = ("default",)
        if data.get("networks") is not None:
            listed = self._names(data["networks"], (*path, "networks"), "network")
            if not listed and isinstance(data["networks"], list):
                self.problem((*path, "networks"), "empty list (omit the key to use 'default')")
            networks = listed or networks

        health = None
        if data.get("health") is not None:
            health = self._health(data["health"], (*path, "health"), defaults.health)
            if is_job:
                self.problem(
                    (*path, "health"),
                    "a job cannot have a health probe (its exit code is its result)",
                )

        restart = self._restart(data.get("restart"), (*path, "restart"), defaults.restart, is_job)
        if is_job and restart.policy in (RestartPolicy.ALWAYS, RestartPolicy.UNLESS_STOPPED):
            self.problem(
                (*path, "restart", "policy"),
                f"a job cannot use restart policy '{restart.policy}' (use 'no' or 'on-failure')",
            )
        pull = defaults.pull
        if data.get("pull") is not None:
            pull = self.choice(data["pull"], (*path, "pull"), PullPolicy, pull)
        working_dir = self.optional(data, "working_dir", path, self.string)
        if working_dir is not None and not working_dir.startswith("/"):
            self.problem((*path, "working_dir"), f"must be an absolute path, got {working_dir!r}")

        return ServiceConfig(
            name=name,
            image=image,
            type=kind,
            command=self._argv(data, "command", path),
            entrypoint=self._argv(data, "entrypoint", path),
            environment=environment,
            env_files=tuple(file for file, _ in env_files),
            volumes=self._mounts(data.get("volumes"), (*path, "volumes")),
            networks=networks,
            ports=self._ports(data.get("ports"), (*path, "ports")),
            user=self._user(data.get("user"), (*path, "user")),
            working_dir=working_dir,
            depends_on=self._depends_on(data.get("depends_on"), (*path, "depends_on")),
            health=health,
            restart=restart,
            stop=self._stop(
                self.mapping(data.get("stop"), (*path, "stop")), (*path, "stop"), defaults.stop
            ),
            pull=pull,
            secrets=self._names(data.get("secrets"), (*path, "secrets"), "secret"),
            labels=self._labels(data.get("labels"), (*path, "labels")),
            backup=self._backup(data.get("backup"), (*path, "backup")),
            restore=self._restore(data.get("restore"), (*path, "restore")),
        )

    def _exec_argv(self, data: dict[str, Any], path: KeyPath) -> tuple[str, ...]:
        argv = self._argv(data, "exec", path) if "exec" in data else None
        if argv is not None and not argv:
            self.problem((*path, "exec"), "empty command")
        return argv or ()

    def _backup(self, value: object, path: KeyPath) -> BackupConfig | None:
        if value is None:
            return None
        data = self.mapping(value, path)
        self.keys(data, path, ("exec", "keep"), required=("exec",))
        keep = 7 if "keep" not in data else self.integer(data["keep"], (*path, "keep"), 7, 1)
        return BackupConfig(exec=self._exec_argv(data, path), keep=keep)

    def _restore(self, value: object, path: KeyPath) -> RestoreConfig | None:
        if value is None:
            return None
        data = self.mapping(value, path)
        self.keys(data, path, ("exec",), required=("exec",))
        return RestoreConfig(exec=self._exec_argv(data, path))

    def _update(self, value: object, path: KeyPath) -> UpdateSchedule | None:
        """`update: {every: 24h, at: "04:00", pull: true}`; absent means no automatic updates."""
        if value is None:
            return None
        data = self.mapping(value, path)
        self.keys(data, path, ("every", "at", "pull"), required=("every",))
        every = self.duration(data["every"], (*path, "every"), 86400.0) if "every" in data else 0
        at = None
        if data.get("at") is not None:
            text = self.scalar_text(data["at"], (*path, "at")) or ""
            match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text)
            if match is None:
                self.problem(
                    (*path, "at"), f'invalid time of day {text!r} (use HH:MM, e.g. "04:00")'
                )
            else:
                at = (int(match[1]), int(match[2]))
        pull = self.optional(data, "pull", path, self.boolean)
        return UpdateSchedule(every=every, at=at, pull=True if pull is None else pull)

    def _argv(self, data: dict[str, Any], key: str, path: KeyPath) -> tuple[str, ...] | None:
        value = data.get(key)
        if value is None:
            return None
        return self._command(value, (*path, key))

    def _command(self, value: object, path: KeyPath) -> tuple[str, ...] | None:
        """A string (split like a shell would, without running one) or a list of words."""
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                self.problem(path, f"cannot split {value!r}: {exc}")
                return None
        if isinstance(value, list):
            words = [self.scalar_text(v, (*path, i)) for i, v in enumerate(value)]
            return tuple(w for w in words if w is not None)
        self.problem(path, f"expected a string or a list, got {_kind(value)}")
        return None

    def _user(self, value: object, path: KeyPath) -> str | None:
        if value is None:
            return None
        # `user: 1000` is a uid: keep it as the operator wrote it.
        if isinstance(value, int) and not isinstance(value, bool):
            return self.raw.get(path, str(value))
        return self.string(value, path) or None

    def _names(self, value: object, path: KeyPath, what: str) -> tuple[str, ...]:
        return tuple(name for _, name in self._indexed_names(value, path, what))

    def _indexed_names(self, value: object, path: KeyPath, what: str) -> list[tuple[int, str]]:
        """A list of distinct names, each with its index in the YAML list."""
        out: list[tuple[int, str]] = []
        for index, item in enumerate(self.seq(value, path)):
            name = self.name(item, (*path, index), what)
            if name is None:
                continue
            if any(name == seen for _, seen in out):
                self.problem((*path, index), f"{what} {name!r} listed twice")
                continue
            out.append((index, name))
        return out

    def _key_values(self, value: object, path: KeyPath, what: str) -> dict[str, str]:
        """A {K: V} mapping or a ["K=V"] list, values as written; null value -> ""."""
        out: dict[str, str] = {}
        if isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, str) or "=" not in item:
                    self.problem((*path, index), f"expected 'KEY=VALUE', got {item!r}")
                    continue
                key, _, text = item.partition("=")
                if self._check_key(key, (*path, index), what):
                    out[key] = text
            return out
        for key, item in self.mapping(value, path).items():
            written = self.scalar_text(item, (*path, key))
            if written is not None and self._check_key(key, (*path, key), what):
                out[key] = written
        return out

    def _check_key(self, key: str, path: KeyPath, what: str) -> bool:
        if not key or any(c.isspace() for c in key) or "=" in key:
            self.problem(path, f"invalid {what} name {key!r}")
            return False
        return True

    def _environment(self, value: object, path: KeyPath) -> dict[str, str]:
        return self._key_values(value, path, "variable") if value is not None else {}

    def _labels(self, value: object, path: KeyPath) -> dict[str, str]:
        labels = self._key_values(value, path, "label") if value is not None else {}
        for key in labels:
            if key.startswith(RESERVED_LABEL_PREFIX):
                self.problem(
                    (*path, key), f"labels starting with '{RESERVED_LABEL_PREFIX}' are reserved"
                )
        return labels

    def _env_file_list(self, value: object, path: KeyPath) -> list[tuple[Path, KeyPath]]:
        if value is None:
            return []
        if isinstance(value, str):
            return [(self.resolve(value), path)]
        out: list[tuple[Path, KeyPath]] = []
        for index, item in enumerate(self.seq(value, path)):
            if isinstance(item, str):
                out.append((self.resolve(item), (*path, index)))
            else:
                self.problem((*path, index), f"expected a file name, got {_kind(item)}")
        return out

    def _read_env_file(self, file: Path, path: KeyPath) -> dict[str, str]:
        """An env file's variables (see `parse_env_file`); its bad lines are problems."""
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = _reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            self.problem(path, f"cannot read env file {str(file)!r}: {reason}")
            return {}
        out, bad = parse_env_file(text)
        for number, _line in bad:
            # Never echo the line: it may hold a password (this reaches logs and the API).
            self.problems.append(
                ConfigProblem(
                    format_path(path),
                    "invalid line in env file (expected KEY=VALUE; not shown, it may be secret)",
                    str(file),
                    number,
                )
            )
        return out

    def _health(self, value: object, path: KeyPath, base: HealthTiming) -> HealthConfig | None:
        data = self.mapping(value, path)
        self.keys(data, path, (*_PROBE_KEYS, *_TIMING_KEYS))
        timing = self._timing(data, path, base)
        given = [key for key in _PROBE_KEYS if key in data]
        if len(given) != 1:
            found = f"got {', '.join(given)}" if given else "got none"
            self.problem(path, f"needs exactly one probe: http, tcp or exec ({found})")
            return None
        key = given[0]
        probe = self._probe(key, data[key], (*path, key))
        if probe is None:
            return None
        return HealthConfig(
            probe=probe,
            interval=timing.interval,
            timeout=timing.timeout,
            retries=timing.retries,
            start_period=timing.start_period,
            start_interval=timing.start_interval,
        )

    def _probe(self, kind: str, value: object, path: KeyPath) -> Probe | None:
        if kind == "exec":
            if isinstance(value, str):
                if not value.strip():
                    self.problem(path, "empty command")
                    return None
                return ExecProbe(("/bin/sh", "-c", value))
            command = self._command(value, path)
            if command is not None and not command:
                self.problem(path, "empty command")
            return ExecProbe(command) if command else None
        if kind == "tcp":
            if isinstance(value, int) and not isinstance(value, bool):
                return TcpProbe(self.integer(value, path, 0, 1, 65535))
            data = self.mapping(value, path)
            self.keys(data, path, ("port",), required=("port",))
            if "port" not in data:
                return None
            return TcpProbe(self.integer(data["port"], (*path, "port"), 0, 1, 65535))
        return self._http_probe(self.mapping(value, path), path)

    def _http_probe(self, data: dict[str, Any], path: KeyPath) -> HttpProbe | None:
        self.keys(data, path, ("port", "path", "url", "scheme", "tls_verify", "ca_file"))
        if ("port" in data) == ("url" in data):
            self.problem(path, "needs exactly one of port or url")
            return None
        tls = self._probe_tls(data, path)
        if "url" in data:
            url = self.string(data["url"], (*path, "url"))
            for key in ("path", "scheme"):
                if key in data:
                    self.problem((*path, key), f"not allowed with url (put the {key} in the url)")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                self.problem((*path, "url"), f"expected an http:// or https:// URL, got {url!r}")
                return None
            scheme: Literal["http", "https"] = "https" if parts.scheme == "https" else "http"
            self._check_tls_scheme(data, path, scheme)
            return replace(tls, url=url, scheme=scheme)
        port = self.integer(data["port"], (*path, "port"), 0, 1, 65535)
        probe_path = "/health"
        if "path" in data:
            probe_path = self.string(data["path"], (*path, "path"), probe_path)
            if not probe_path.startswith("/"):
                self.problem((*path, "path"), f"must start with '/', got {probe_path!r}")
        scheme = "http"
        if data.get("scheme") is not None:
            if data["scheme"] in ("http", "https"):
                scheme = data["scheme"]
            else:
                self.problem(
                    (*path, "scheme"), f"invalid value {data['scheme']!r} (one of: http, https)"
                )
                return None
        self._check_tls_scheme(data, path, scheme)
        return replace(tls, port=port, path=probe_path, scheme=scheme)

    def _probe_tls(self, data: dict[str, Any], path: KeyPath) -> HttpProbe:
        """An HttpProbe holding only the TLS settings (`tls_verify`, `ca_file` and its digest)."""
        tls_verify = True
        if data.get("tls_verify") is not None:
            tls_verify = self.boolean(data["tls_verify"], (*path, "tls_verify"), True)
        ca_value = self.optional(data, "ca_file", path, self.string)
        if not ca_value:
            return HttpProbe(tls_verify=tls_verify)
        if not tls_verify:
            self.problem(
                (*path, "tls_verify"),
                "false accepts any certificate: it cannot go with ca_file (drop one of them)",
            )
        ca_file = self.resolve(ca_value)
        return HttpProbe(
            tls_verify=tls_verify,
            ca_file=ca_file,
            ca_digest=self._ca_digest(ca_file, (*path, "ca_file")),
        )

    def _ca_digest(self, file: Path, path: KeyPath) -> str | None:
        """The sha256 of a PEM CA bundle; a problem if it cannot be read or holds no certificate."""
        try:
            data = file.read_bytes()
        except OSError as exc:
            self.problem(path, f"cannot read CA file {str(file)!r}: {_reason(exc)}")
            return None
        if not _holds_pem_certificate(data):
            self.problem(path, f"{str(file)!r} is not a PEM CA bundle (no certificate in it)")
            return None
        return hashlib.sha256(data).hexdigest()

    def _check_tls_scheme(self, data: dict[str, Any], path: KeyPath, scheme: str) -> None:
        if scheme == "https":
            return
        for key in ("tls_verify", "ca_file"):
            if data.get(key) is not None:
                self.problem((*path, key), "applies only to https (set scheme: https)")

    def _depends_on(self, value: object, path: KeyPath) -> dict[str, Dependency]:
        out: dict[str, Dependency] = {}
        if isinstance(value, list):
            for index, name in self._indexed_names(value, path, "service"):
                # Later checks name the dependency by key path; give it the item's line.
                line = self.lines.get((*path, index))
                if line is not None:
                    self.lines.setdefault((*path, name), line)
                out[name] = Dependency(Condition.STARTED)
            return out
        for name, item in self.mapping(value, path).items():
            item_path = (*path, name)
            if item is None:
                out[name] = Dependency(Condition.STARTED)
            elif isinstance(item, str):
                out[name] = Dependency(self.choice(item, item_path, Condition, Condition.STARTED))
            else:
                data = self.mapping(item, item_path)
                self.keys(data, item_path, ("condition", "restart"))
                condition = Condition.STARTED
                if data.get("condition") is not None:
                    condition = self.choice(
                        data["condition"], (*item_path, "condition"), Condition, condition
                    )
                restart = False
                if "restart" in data:
                    restart = self.boolean(data["restart"], (*item_path, "restart"))
                out[name] = Dependency(condition, restart)
        return out

    def _mounts(self, value: object, path: KeyPath) -> tuple[VolumeMount, ...]:
        mounts: list[VolumeMount] = []
        targets: dict[str, int] = {}
        for index, item in enumerate(self.seq(value, path)):
            item_path = (*path, index)
            mount = self._mount(item, item_path)
            if mount is None:
                continue
            if mount.target in targets:
                self.problem(
                    item_path,
                    f"target {mount.target!r} already mounted by item {targets[mount.target]}",
                )
                continue
            targets[mount.target] = index
            mounts.append(mount)
        return tuple(mounts)

    def _mount(self, item: object, path: KeyPath) -> VolumeMount | None:
        kind: str | None
        if isinstance(item, str):
            parts = item.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                self.problem(path, f"expected SOURCE:TARGET[:ro|rw], got {item!r}")
                return None
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) == 3 else "rw"
            if mode not in ("ro", "rw"):
                self.problem(path, f"invalid mode {mode!r} (ro or rw)")
                return None
            read_only = mode == "ro"
            kind = None
            source_path = target_path = path
        else:
            data = self.mapping(item, path)
            self.keys(data, path, ("type", "source", "target", "read_only"), ("source", "target"))
            if "source" not in data or "target" not in data:
                return None
            source_path, target_path = (*path, "source"), (*path, "target")
            source = self.string(data["source"], source_path)
            target = self.string(data["target"], target_path)
            read_only = False
            if "read_only" in data:
                read_only = self.boolean(data["read_only"], (*path, "read_only"))
            kind = None
            if data.get("type") is not None:
                kind = data["type"]
                if kind not in ("volume", "bind"):
                    self.problem((*path, "type"), f"invalid value {kind!r} (one of: volume, bind)")
                    return None
            if not source or not target:
                return None
        if not target.startswith("/"):
            self.problem(target_path, f"target must be an absolute path, got {target!r}")
            return None
        looks_like_path = source.startswith(("/", ".", "~"))
        if kind is None:
            kind = "bind" if looks_like_path else "volume"
        if kind == "bind":
            return VolumeMount("bind", str(self.resolve(source)), target, read_only)
        if looks_like_path or not NAME_RE.match(source):
            self.problem(source_path, f"invalid volume name {source!r}")
            return None
        return VolumeMount("volume", source, target, read_only)

    def _ports(self, value: object, path: KeyPath) -> tuple[PortMapping, ...]:
        ports: list[PortMapping] = []
        for index, item in enumerate(self.seq(value, path)):
            port = self._port(item, (*path, index))
            if port is not None:
                ports.append(port)
        return tuple(ports)

    def _port(self, item: object, path: KeyPath) -> PortMapping | None:
        if isinstance(item, int) and not isinstance(item, bool):
            # YAML 1.1 reads unquoted 22:22 as the base-60 number 1342: use the text as written.
            item = self.raw.get(path, str(item))
        if isinstance(item, str):
            return self._port_short(item, path)
        data = self.mapping(item, path)
        self.keys(data, path, ("target", "published", "host_ip", "protocol"), ("target",))
        if "target" not in data:
            return None
        container = self.integer(data["target"], (*path, "target"), 0, 1, 65535)
        host: int | None = None
        published = data.get("published")
        if isinstance(published, str) and published.isdigit():
            published = int(published)
        if published is not None:
            host = self.integer(published, (*path, "published"), 0, 1, 65535)
        host_ip = self.optional(data, "host_ip", path, self.string)
        if host_ip is not None and not _valid_ip(host_ip):
            self.problem((*path, "host_ip"), f"invalid IP address {host_ip!r}")
        protocol = self.optional(data, "protocol", path, self.string) or "tcp"
        if protocol not in ("tcp", "udp"):
            self.problem((*path, "protocol"), f"invalid protocol {protocol!r} (tcp or udp)")
            return None
        return PortMapping(container, host, host_ip or None, "udp" if protocol == "udp" else "tcp")

    def _port_short(self, text: str, path: KeyPath) -> PortMapping | None:
        spec, _, protocol = text.partition("/")
        if protocol not in ("", "tcp", "udp"):
            self.problem(path, f"invalid protocol {protocol!r} in {text!r} (tcp or udp)")
            return None
        host_ip: str | None = None
        if spec.startswith("["):  # [::1]:8080:80
            ip, bracket, spec = spec[1:].partition("]")
            if not bracket or not spec.startswith(":"):
                self.problem(path, f"invalid port mapping {text!r}")
                return None
            host_ip, spec = ip, spec[1:]
            parts = spec.split(":")
            if len(parts) != 2:
                self.problem(path, f"invalid port mapping {text!r}")
                return None
            parts.insert(0, host_ip)
        else:
            parts = spec.split(":")
        if len(parts) > 3:
            self.problem(
                path, f"invalid port mapping {text!r} (use [[HOST_IP:]HOST:]CONTAINER[/udp])"
            )
            return None
        if len(parts) == 3:
            host_ip = parts.pop(0)
            if not _valid_ip(host_ip):
                self.problem(path, f"invalid IP address {host_ip!r} in {text!r}")
                return None
        numbers: list[int | None] = []
        for part in parts:
            if part == "" and len(numbers) == 0 and len(parts) == 2:
                numbers.append(None)  # "127.0.0.1::80": Docker picks the host port
                continue
            if not part.isdigit():
                self.problem(path, f"invalid port {part!r} in {text!r}")
                return None
            number = int(part)
            if not 1 <= number <= 65535:
                self.problem(path, f"port {number} out of range (1-65535) in {text!r}")
                return None
            numbers.append(number)
        container = numbers[-1]
        assert container is not None
        host = numbers[0] if len(numbers) == 2 else None
        return PortMapping(container, host, host_ip or None, "udp" if protocol == "udp" else "tcp")

    # ---------------------------------------------------------------- cross checks

    def _check_references(
        self,
        services: dict[str, ServiceConfig],
        networks: dict[str, NetworkConfig],
        volumes: dict[str, VolumeConfig],
        secrets: dict[str, SecretConfig],
    ) -> None:
        for name, service in services.items():
            base: KeyPath = ("services", name)
            for index, network in enumerate(service.networks):
                if network != "default" and network not in networks:
                    self.problem((*base, "networks", index), f"unknown network {network!r}")
            for index, mount in enumerate(service.volumes):
                if mount.kind == "volume" and mount.source not in volumes:
                    self.problem(
                        (*base, "volumes", index),
                        f"unknown volume {mount.source!r} (declare it under top-level volumes)",
                    )
            for index, secret in enumerate(service.secrets):
                if secret not in secrets:
                    self.problem((*base, "secrets", index), f"unknown secret {secret!r}")

    def _check_dependencies(self, services: dict[str, ServiceConfig]) -> None:
        edges: dict[str, list[str]] = {}
        for name, service in services.items():
            edges[name] = []
            for target, dep in service.depends_on.items():
                path: KeyPath = ("services", name, "depends_on", target)
                other = services.get(target)
                if target == name:
                    self.problem(path, "a service cannot depend on itself")
                    continue
                if other is None:
                    self.problem(path, f"unknown service {target!r}")
                    continue
                edges[name].append(target)
                if dep.condition is Condition.HEALTHY:
                    if other.type is ServiceType.JOB:
                        self.problem(
                            path,
                            f"condition 'healthy' but service {target!r} is a job "
                            "(use 'completed')",
                        )
                    elif other.health is None:
                        self.problem(
                            path,
                            f"condition 'healthy' but service {target!r} has no health probe",
                        )
                if dep.condition is Condition.COMPLETED and other.type is not ServiceType.JOB:
                    self.problem(path, f"condition 'completed' but service {target!r} is not a job")
        cycle = DependencyGraph(edges).find_cycle()
        if cycle is not None:
            self.problem(
                ("services", cycle[0], "depends_on", cycle[1]),
                "dependency cycle " + " -> ".join(cycle),
            )

    def _check_ports(self, services: dict[str, ServiceConfig]) -> None:
        """Two services cannot publish the same host port (Docker fails at start, not here)."""
        taken: dict[tuple[int, str], list[tuple[str | None, str]]] = {}
        wildcard = {None, "0.0.0.0", "::"}
        for name, service in services.items():
            for index, port in enumerate(service.ports):
                if port.host_port is None:
                    continue
                key = (port.host_port, port.protocol)
                for ip, owner in taken.get(key, []):
                    if ip == port.host_ip or ip in wildcard or port.host_ip in wildcard:
                        self.problem(
                            ("services", name, "ports", index),
                            f"host port {port.host_port}/{port.protocol} is already published "
                            f"by service {owner!r}",
                        )
                        break
                taken.setdefault(key, []).append((port.host_ip, name))


def parse_env_file(text: str) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """KEY=VALUE lines; '#' comments, blank lines, `export ` and surrounding quotes allowed.

    Values are taken verbatim otherwise (no inline comments, no ${} expansion), like
    `docker run --env-file`: a password may contain '#' or '$'. Returns the variables and the
    lines that are not KEY=VALUE (numbered from 1).
    """
    out: dict[str, str] = {}
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].lstrip()
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            bad.append((number, line))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out, bad


def _holds_pem_certificate(data: bytes) -> bool:
    """True if `data` is PEM text with at least one certificate that OpenSSL can load."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return False
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        return False
    return True


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IP literals ("127.0.0.1", "[::1]")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _valid_listen(text: str) -> bool:
    if text.startswith(UNIX_SCHEME):
        return text[len(UNIX_SCHEME) :].startswith("/")
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535)
