"""Value types shared across the daemon, the API and the CLI, below everything that uses them.

Only the standard library here: a type that the stack creates and the API shows lives here, not
in the module that happens to make it, so a reader of the API need not import the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CONTAINER_UP", "QUIESCENT", "OperatorCommand", "ProbeResult", "RestartCause", "State"]


class State(StrEnum):
    """Where a service is in its life."""

    PENDING = "pending"  # waiting on dependencies, or for its container to come up
    STARTING = "starting"  # container running, inside its start period, not yet healthy
    RUNNING = "running"  # container running; no probe (or a job at work)
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"  # stopped for a restart, waiting out the backoff
    COMPLETED = "completed"  # a job that exited 0
    FAILED = "failed"  # gave up: start failure, failed job, crash-loop limit
    BLOCKED = "blocked"  # a dependency failed, so this one cannot start
    STOPPING = "stopping"
    STOPPED = "stopped"


# States in which the service's container is up.
CONTAINER_UP = frozenset({State.STARTING, State.RUNNING, State.HEALTHY, State.UNHEALTHY})
# States in which nothing more happens until someone asks for it.
QUIESCENT = frozenset({State.STOPPED, State.COMPLETED, State.FAILED, State.BLOCKED})


class RestartCause(StrEnum):
    """Why a restart was issued; a bounded set, fit for a metric label."""

    EXITED = "exited"
    OOM = "oom"
    REMOVED = "removed"
    UNHEALTHY = "unhealthy"
    START_FAILED = "start-failed"
    OPERATOR = "operator"
    DEPENDENCY = "dependency"


class OperatorCommand(StrEnum):
    """What an operator may ask of one service (API, CLI, update's dependents)."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome, kept for the status API."""

    ok: bool
    detail: str
    latency: float
    at: float
    status: int | None = None


def detail_line(text: str) -> str:
    """A message as a probe's detail: its first line, at most 200 characters."""
    return text.splitlines()[0][:200] if text else ""
