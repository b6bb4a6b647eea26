"""The config file's shape as typed, frozen pydantic models, and its JSON Schema.

These models describe what an operator may write (short forms included), for editors
(`yaml-language-server`) and `ovpn-supervisor schema`; `supervisor.config.load` validates with
the hand-written readers, which give each problem its line and a did-you-mean. Both read
their keys from `supervisor.config.keys`, and tests hold the models to those keys and to the
readers' verdicts on a table of files.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from supervisor.config.model import Condition, PullPolicy, RestartPolicy, ServiceType

__all__ = ["MODELINE", "ConfigFile", "config_schema", "schema_text"]

# The first line of a shipped config, relative to the file (editors resolve it so).
MODELINE = "# yaml-language-server: $schema={}"

# The JSON Schema's regexes run in editors (ECMAScript) and in pydantic (Rust): no `\Z`.
_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
_DURATION = r"^(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?(\d+(\.\d+)?ms)?$"

Name = Annotated[str, StringConstraints(pattern=_NAME)]
Duration = Annotated[
    str,
    StringConstraints(min_length=1, pattern=_DURATION),
    Field(description="a duration with its unit: 500ms, 10s, 5m, 1h, 1m30s"),
]
Port = Annotated[int, Field(ge=1, le=65535)]
# What YAML may read a scalar as: `0755`, `1000` or `22:22` are numbers to YAML 1.1.
Scalar = str | int | float | bool
Words = Annotated[
    str | list[Scalar],
    Field(description="a string (split like a shell would, without one) or a list of words"),
]
KeyValues = Annotated[
    dict[str, Scalar | None] | list[str],
    Field(description="a mapping KEY: VALUE, or a list of 'KEY=VALUE'"),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Timing(_Model):
    """How often and how long a health probe runs."""

    interval: Duration | None = None
    timeout: Duration | None = None
    retries: Annotated[int, Field(ge=1)] | None = None
    start_period: Duration | None = None
    start_interval: Duration | None = None


class HttpProbeSpec(_Model):
    """HTTP(S) GET, healthy on 2xx: `port` (and `path`) on the container, or a full `url`."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["port"]}, {"required": ["url"]}]}
    )

    port: Port | None = None
    path: Annotated[str, StringConstraints(pattern=r"^/")] | None = None
    url: Annotated[str, StringConstraints(pattern=r"^https?://")] | None = None
    scheme: Literal["http", "https"] | None = None
    tls_verify: bool | None = None
    ca_file: str | None = None


class TcpProbeSpec(_Model):
    """Healthy when the port accepts a connection."""

    port: Port


class Health(Timing):
    """Exactly one probe (http, tcp or exec) and its timing (default: `defaults.health`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": ["http"]}, {"required": ["tcp"]}, {"required": ["exec"]}]
        }
    )

    http: HttpProbeSpec | None = None
    tcp: Port | TcpProbeSpec | None = None
    exec: Words | None = None


class Backoff(_Model):
    # The first restart after a run of `reset_after` (default 0s: at once).
    first: Duration | None = None
    initial: Duration | None = None
    max: Duration | None = None


class Limit(_Model):
    count: Annotated[int, Field(ge=1)] | None = None
    window: Duration | None = None


class Restart(_Model):
    """When to restart a container, and how fast."""

    policy: RestartPolicy | Literal[False] | None = None  # YAML 1.1 reads a bare `no` as false
    backoff: Backoff | None = None
    limit: Limit | None = None
    reset_after: Duration | None = None


RestartSpec = Annotated[
    Restart | RestartPolicy | Literal[False],
    Field(description="a policy on its own (always, on-failure, ...) or the full section"),
]


class Stop(_Model):
    signal: str | int | None = Field(default=None, description="SIGTERM, TERM or 15")
    timeout: Duration | None = None


class Defaults(_Model):
    """What every service gets unless it says otherwise."""

    health: Timing | None = None
    restart: RestartSpec | None = None
    stop: Stop | None = None
    pull: PullPolicy | None = None


class MountSpec(_Model):
    type: Literal["volume", "bind"] | None = None
    source: str
    target: Annotated[str, StringConstraints(pattern=r"^/")]
    read_only: bool | None = None


class PortSpec(_Model):
    target: Port
    published: Port | Annotated[str, StringConstraints(pattern=r"^\d+$")] | None = None
    host_ip: str | None = None
    protocol: Literal["tcp", "udp"] | None = None


class DependencySpec(_Model):
    condition: Condition | None = None
    restart: bool | None = Field(default=None, description="restart with the dependency")


class Backup(_Model):
    exec: Words
    keep: Annotated[int, Field(ge=1)] | None = None


class Restore(_Model):
    exec: Words


class Service(_Model):
    """One container the supervisor runs (or one job it runs to completion)."""

    image: Annotated[str, StringConstraints(pattern=r"\S")]
    type: ServiceType | None = None
    command: Words | None = None
    entrypoint: Words | None = None
    environment: KeyValues | None = None
    env_file: str | list[str] | None = None
    volumes: list[str | MountSpec] | None = Field(
        default=None, description="SOURCE:TARGET[:ro|rw] or the long form"
    )
    networks: list[Name] | None = None
    ports: list[str | int | PortSpec] | None = Field(
        default=None, description="[[HOST_IP:]HOST:]CONTAINER[/udp] or the long form"
    )
    user: str | int | None = None
    working_dir: Annotated[str, StringConstraints(pattern=r"^/")] | None = None
    depends_on: list[str] | dict[str, DependencySpec | Condition | None] | None = None
    health: Health | None = None
    restart: RestartSpec | None = None
    stop: Stop | None = None
    pull: PullPolicy | None = None
    secrets: list[str] | None = None
    labels: KeyValues | None = None
    backup: Backup | None = None
    restore: Restore | None = None


class Events(_Model):
    keep: Annotated[int, Field(ge=1, le=100_000)] | None = None


class Api(_Model):
    """The local status API and its CLI's address."""

    listen: str | None = Field(default=None, description="HOST:PORT or unix:///absolute/path")
    token_file: str | None = None
    socket_mode: Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3}$")] | int | None = Field(
        default=None, description='an octal mode such as "0660"'
    )
    socket_group: str | int | None = None
    events: Events | None = None
    allowed_hosts: list[str] | None = None


class Systemd(_Model):
    startup_timeout: Duration | None = None


class Network(_Model):
    internal: bool | None = None
    driver: str | None = None
    name: Name | None = None


class Volume(_Model):
    driver: str | None = None
    name: str | None = None


class Secret(_Model):
    file: str


class Update(_Model):
    """Automatic image updates."""

    every: Duration
    at: Annotated[str, StringConstraints(pattern=r"^([01]?\d|2[0-3]):[0-5]\d$")] | int | None = (
        Field(default=None, description='a time of day, HH:MM ("04:00")')
    )
    pull: bool | None = None


class Backups(_Model):
    dir: str | None = None


class ConfigFile(_Model):
    """An ovpn-supervisor config file (version 1)."""

    version: Literal[1]
    project: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    api: Api | None = None
    systemd: Systemd | None = None
    defaults: Defaults | None = None
    networks: dict[Name, Network | None] | None = None
    volumes: dict[Name, Volume | None] | None = None
    secrets: dict[Name, Secret] | None = None
    services: dict[Name, Service] | None = None
    update: Update | None = None
    backups: Backups | None = None


def config_schema() -> dict[str, Any]:
    """The config file's JSON Schema (draft 2020-12), as `ovpn-supervisor schema` prints it."""
    schema = _tidy(ConfigFile.model_json_schema())
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ovpn-supervisor config",
        **schema,
    }


def schema_text() -> str:
    """The schema as the committed config/supervisor.schema.json holds it."""
    return json.dumps(config_schema(), indent=2) + "\n"


def _tidy(node: Any) -> Any:
    """Drop pydantic's generated titles and `default: null`; close name-keyed mappings."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _tidy(body) for name, body in value.items()}
        elif (key == "title" and isinstance(value, str)) or (key == "default" and value is None):
            continue
        else:
            out[key] = _tidy(value)
    if "patternProperties" in out:
        out.setdefault("additionalProperties", False)
    return out
