"""The status API's contract: every JSON answer's shape, written once.

Each answer is a `TypedDict` below. The serializers build them (so mypy checks every key and
type), and `component_schemas` derives the OpenAPI components from the same classes, so the
document cannot drift from what the handlers send. Fields are closed and all required;
`Annotated[T, "text"]` adds a description, `T | None` makes a field nullable.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import (
    Annotated,
    Any,
    Literal,
    TypedDict,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from supervisor.config import ServiceType
from supervisor.daemon import ReloadResult
from supervisor.daemon_lifecycle import DaemonState
from supervisor.events import Event, EventKind
from supervisor.model import OperatorCommand, State
from supervisor.status import ServiceStatus
from supervisor.updates import Outcome, UpdateResult

EpochSeconds = Annotated[float, "epoch seconds"]
Health = Literal["healthy", "unhealthy", "starting", "unknown", "none"]


class ApiError(Exception):
    """A client-facing error: status and message end up in the JSON answer (`ErrorBody`)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# -- the shapes -------------------------------------------------------------------------------


class ErrorBody(TypedDict):
    error: str
    message: str


class ProbeBody(TypedDict):
    ok: bool
    detail: str
    status: int | None
    latency_seconds: float
    at: EpochSeconds


class ServiceBody(TypedDict):
    name: str
    type: ServiceType
    image: str
    state: State
    health: Health
    up_to_target: bool
    reason: str
    since: Annotated[float, "epoch seconds of the last state change"]
    container_id: str | None
    restarts: int
    last_exit_code: int | None
    last_probe: ProbeBody | None
    blocked_by: str | None
    operator_stopped: bool
    environment_keys: list[str]


class ReloadBody(TypedDict):
    ok: bool
    at: EpochSeconds
    message: str
    errors: list[str]
    added: list[str]
    removed: list[str]
    changed: list[str]
    notes: list[str]


class ServiceOutcomeBody(TypedDict):
    service: str
    outcome: Outcome
    old_image: str | None
    new_image: str | None
    reason: str


class UpdateBody(TypedDict):
    ok: Annotated[bool, "every planned service was updated"]
    at: EpochSeconds
    message: str
    dry_run: bool
    plan: list[str]
    services: list[ServiceOutcomeBody]
    backups: list[str]
    notes: list[str]


class BackupBody(TypedDict):
    ok: bool
    message: str
    files: list[str]


class RestoreBody(TypedDict):
    ok: bool
    message: str


class DaemonBody(TypedDict):
    state: DaemonState
    version: str
    pid: int
    uptime_seconds: float
    config_file: str
    config_digest: str
    docker_connected: bool
    last_reload: ReloadBody | None
    last_update: UpdateBody | None
    summary: str
    all_up: bool


class StatusBody(TypedDict):
    daemon: DaemonBody
    services: list[ServiceBody]


class CommandAcceptedBody(TypedDict):
    service: str
    action: OperatorCommand
    accepted: bool
    state: State


class EventBody(TypedDict):
    id: int
    at: EpochSeconds
    kind: EventKind
    service: str | None
    message: str
    data: dict[str, Any]


class EventsBody(TypedDict):
    events: list[EventBody]
    last_id: Annotated[int, "id of the newest event (0: none)"]
    oldest_id: Annotated[int, "id of the oldest event held"]


class HealthBody(TypedDict):
    ok: bool
    loop_lag_seconds: float
    docker_connected: bool


# The OpenAPI component name of each answer.
COMPONENTS: dict[str, type] = {
    "Error": ErrorBody,
    "Probe": ProbeBody,
    "Service": ServiceBody,
    "ReloadResult": ReloadBody,
    "ServiceOutcome": ServiceOutcomeBody,
    "UpdateResult": UpdateBody,
    "BackupResult": BackupBody,
    "RestoreResult": RestoreBody,
    "Daemon": DaemonBody,
    "Status": StatusBody,
    "CommandAccepted": CommandAcceptedBody,
    "Event": EventBody,
    "Events": EventsBody,
    "Health": HealthBody,
}

# -- the serializers ----------------------------------------------------------------------------


def dumps(value: object) -> str:
    """Compact JSON, as every answer is sent."""
    return json.dumps(value, separators=(",", ":"))


def error_json(status: int, message: str) -> ErrorBody:
    return {"error": HTTPStatus(status).phrase, "message": message}


def _health(status: ServiceStatus) -> Health:
    if not status.has_probe:
        return "none"
    if status.state is State.HEALTHY:
        return "healthy"
    if status.state is State.UNHEALTHY:
        return "unhealthy"
    if status.state is State.STARTING:
        return "starting"
    return "unknown"


def service_json(status: ServiceStatus) -> ServiceBody:
    """One service as the API shows it (environment keys, never values)."""
    probe = status.last_probe
    return {
        "name": status.name,
        "type": status.type,
        "image": status.image,
        "state": status.state,
        "health": _health(status),
        "up_to_target": status.up_to_target,
        "reason": status.reason,
        "since": status.since,
        "container_id": status.container_id,
        "restarts": status.restarts,
        "last_exit_code": status.last_exit_code,
        "last_probe": None
        if probe is None
        else {
            "ok": probe.ok,
            "detail": probe.detail,
            "status": probe.status,
            "latency_seconds": probe.latency,
            "at": probe.at,
        },
        "blocked_by": status.blocked_by,
        "operator_stopped": status.operator_stopped,
        "environment_keys": list(status.environment_keys),
    }


def reload_json(result: ReloadResult) -> ReloadBody:
    return {
        "ok": result.ok,
        "at": result.at,
        "message": result.message,
        "errors": list(result.errors),
        "added": list(result.added),
        "removed": list(result.removed),
        "changed": list(result.changed),
        "notes": list(result.notes),
    }


def update_json(result: UpdateResult) -> UpdateBody:
    return {
        "ok": result.ok,
        "at": result.at,
        "message": result.message,
        "dry_run": result.dry_run,
        "plan": list(result.plan),
        "services": [
            {
                "service": s.service,
                "outcome": s.outcome,
                "old_image": s.old_image,
                "new_image": s.new_image,
                "reason": s.reason,
            }
            for s in result.services
        ],
        "backups": list(result.backups),
        "notes": list(result.notes),
    }


def event_json(event: Event) -> EventBody:
    return {
        "id": event.id,
        "at": event.at,
        "kind": event.kind,
        "service": event.service,
        "message": event.message,
        "data": dict(event.data),
    }


# -- the OpenAPI components, derived from the shapes above --------------------------------------


@dataclass(frozen=True)
class _Field:
    schema: dict[str, Any]
    nullable: bool = False


_SCALARS: dict[object, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _field(tp: object) -> _Field:
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *notes = get_args(tp)
        found = _field(inner)
        text = " ".join(n for n in notes if isinstance(n, str))
        return _Field({**found.schema, "description": text}, found.nullable)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"only `T | None` unions are part of the contract, not {tp}")
        return _Field(_field(options[0]).schema, nullable=True)
    if origin is Literal:
        return _Field({"type": "string", "enum": list(get_args(tp))})
    if origin is list:
        return _Field({"type": "array", "items": _field(get_args(tp)[0]).schema})
    if origin is dict:
        return _Field({"type": "object"})
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _Field({"type": "string", "enum": [m.value for m in tp]})
    if isinstance(tp, type) and is_typeddict(tp):
        return _Field({"$ref": f"#/components/schemas/{_component_name(tp)}"})
    if tp in _SCALARS:
        return _Field({"type": _SCALARS[tp]})
    raise TypeError(f"no OpenAPI schema for {tp!r}")


def _component_name(shape: type) -> str:
    for name, known in COMPONENTS.items():
        if known is shape:
            return name
    raise TypeError(f"{shape.__name__} is referenced but is no component: add it to COMPONENTS")


def schema_of(shape: type) -> dict[str, Any]:
    """A closed OpenAPI 3.0 object schema for one `TypedDict`: every field required."""
    properties = {}
    for key, tp in get_type_hints(shape, include_extras=True).items():
        found = _field(tp)
        properties[key] = {**found.schema, "nullable": True} if found.nullable else found.schema
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def component_schemas() -> dict[str, dict[str, Any]]:
    """Every answer's schema by its OpenAPI component name."""
    return {name: schema_of(shape) for name, shape in COMPONENTS.items()}
