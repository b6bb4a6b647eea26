"""What the Docker facade hands out: frozen value types, and their parsing from the engine's JSON.

No docker-py here: these are plain data, read by the runner, the stack, probes and the API.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor.spec import LABEL_CONFIG_HASH, LABEL_SERVICE


@dataclass(frozen=True)
class LogOptions:
    """Which part of a container's output to read (as `docker logs` takes it)."""

    tail: int | None = None  # last N lines; None: all
    since: float | None = None  # epoch seconds
    timestamps: bool = False

    def kwargs(self) -> dict[str, Any]:
        return {
            "stdout": True,
            "stderr": True,
            "timestamps": self.timestamps,
            "tail": "all" if self.tail is None else self.tail,
            # Whole seconds: docker-py would send a tiny float in exponent notation, which the
            # engine cannot parse; under a second means "from the start" anyway.
            **({"since": int(self.since)} if self.since and self.since >= 1 else {}),
        }


@dataclass(frozen=True)
class ContainerInfo:
    """What the engine reports about one container."""

    id: str
    name: str
    service: str | None
    config_hash: str | None
    status: str
    running: bool
    exit_code: int | None
    oom_killed: bool
    started_at: str
    finished_at: str
    addresses: Mapping[str, str] = field(default_factory=dict)
    image_id: str = ""  # the image ID the container was created from
    labels: Mapping[str, str] = field(default_factory=dict)
    created: str = ""  # RFC 3339, as the engine reports it

    @property
    def address(self) -> str | None:
        """First IP address the host can use to reach the container."""
        return next((ip for ip in self.addresses.values() if ip), None)


@dataclass(frozen=True)
class ContainerEvent:
    """One container event from the engine's stream."""

    action: str
    container_id: str
    name: str
    service: str | None
    attributes: Mapping[str, str]
    time_ns: int


@dataclass(frozen=True)
class StreamReset:
    """The event stream (re)connected: events may have been missed, re-inspect everything."""

    reconnected: bool


@dataclass(frozen=True)
class StreamLost:
    """The event stream broke: the engine is probably gone (it reconnects by itself)."""

    error: str


@dataclass(frozen=True)
class ExecResult:
    """Outcome of a command run inside a container."""

    exit_code: int
    output: bytes


def to_info(attrs: Mapping[str, Any]) -> ContainerInfo:
    """One container as `inspect_container` returned it."""
    state = attrs.get("State") or {}
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return ContainerInfo(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        service=labels.get(LABEL_SERVICE),
        config_hash=labels.get(LABEL_CONFIG_HASH),
        status=str(state.get("Status", "unknown")),
        running=bool(state.get("Running", False)),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled", False)),
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
        addresses={name: str(net.get("IPAddress") or "") for name, net in networks.items()},
        image_id=str(attrs.get("Image") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        created=str(attrs.get("Created", "")),
    )


def to_event(raw: Mapping[str, Any]) -> ContainerEvent | None:
    """One raw event of the stream, or None when it is not about a container."""
    if raw.get("Type") != "container":
        return None
    actor = raw.get("Actor") or {}
    attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    action = str(raw.get("Action") or raw.get("status") or "")
    return ContainerEvent(
        # "health_status: healthy" and "exec_start: sh -c ..." carry detail after a colon.
        action=action.split(":", 1)[0].strip(),
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        name=attributes.get("name", ""),
        service=attributes.get(LABEL_SERVICE),
        attributes=attributes,
        time_ns=int(raw.get("timeNano") or time.time_ns()),
    )
