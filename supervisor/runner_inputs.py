"""What a service's runner takes in besides its state machine's events: the engine's word,
probe results, retries and rechecks. Plain values, so the runner's mailbox is one queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from supervisor.model import ProbeResult
from supervisor.service import Action, Event


@dataclass(frozen=True)
class DockerNoticed:
    """The engine said something about our container; re-inspect before believing it."""

    container_id: str
    exit_code: int | None = None  # a `die` event says it
    at_ns: int = 0


@dataclass(frozen=True)
class ProbeDone:
    container_id: str
    result: ProbeResult


@dataclass(frozen=True)
class Retry:
    """Perform an action again (after the engine came back)."""

    action: Action


@dataclass(frozen=True)
class Recheck:
    """Re-inspect the container now and say when the machine has taken it in."""

    done: asyncio.Future[None]


@dataclass(frozen=True)
class DropAhead:
    """Blocked before it ever started: remove the container made ahead for it."""


RunnerInput = Event | DockerNoticed | ProbeDone | Retry | Recheck | DropAhead
