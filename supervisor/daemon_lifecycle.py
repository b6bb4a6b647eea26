"""The daemon's own lifecycle as a pure state machine: (lifecycle, event) -> lifecycle.

    waiting-for-docker -> starting -> running -> stopping -> stopped
                 \\            \\          |
                  `-----------`---> reloading (and back where it came from)

A stop always wins: once stopping, no reload's end, no target reached brings the daemon back to
running. Events are named in the past tense; `advance` is the only function that moves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class DaemonState(StrEnum):
    WAITING_FOR_DOCKER = "waiting-for-docker"
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EngineReached:
    """Docker answered and the stack was made: its first start begins."""


@dataclass(frozen=True)
class TargetReached:
    """Every service got where it should be (healthy, running, completed) for the first time."""


@dataclass(frozen=True)
class ReloadBegan:
    pass


@dataclass(frozen=True)
class ReloadEnded:
    pass


@dataclass(frozen=True)
class StopBegan:
    """A stop was asked for (signal) or the stack began stopping."""


@dataclass(frozen=True)
class Stopped:
    """Everything is down; the process is about to exit."""


LifecycleEvent = EngineReached | TargetReached | ReloadBegan | ReloadEnded | StopBegan | Stopped

_ENDING = frozenset({DaemonState.STOPPING, DaemonState.STOPPED})


@dataclass(frozen=True)
class Lifecycle:
    """Where the daemon is; `resume`: where a reload under way returns to."""

    state: DaemonState = DaemonState.WAITING_FOR_DOCKER
    resume: DaemonState | None = None


def advance(now: Lifecycle, event: LifecycleEvent) -> Lifecycle:
    """The daemon's next lifecycle after `event`; an event that does not apply changes nothing."""
    state = now.state
    match event:
        case Stopped():
            return Lifecycle(DaemonState.STOPPED)
        case StopBegan():
            return now if state in _ENDING else Lifecycle(DaemonState.STOPPING)
        case _ if state in _ENDING:
            return now  # a stop always wins
        case EngineReached() if state is DaemonState.WAITING_FOR_DOCKER:
            return Lifecycle(DaemonState.STARTING)
        case EngineReached() if state is DaemonState.RELOADING:
            return replace(now, resume=DaemonState.STARTING)
        case TargetReached() if state is DaemonState.STARTING:
            return Lifecycle(DaemonState.RUNNING)
        case TargetReached() if now.resume is DaemonState.STARTING:
            return replace(now, resume=DaemonState.RUNNING)
        case ReloadBegan() if state is not DaemonState.RELOADING:
            return Lifecycle(DaemonState.RELOADING, resume=state)
        case ReloadEnded() if state is DaemonState.RELOADING:
            return Lifecycle(now.resume or DaemonState.RUNNING)
    return now
