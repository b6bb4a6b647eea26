"""The event history: what happened to the stack, kept in memory and handed to live subscribers.

One way in, `EventLog.publish`: the stack's observer calls are turned into events by
`EventRecorder`, and the daemon (reloads) and the API (operator actions) publish directly. The
log holds the last `keep` events (ids increase by one, so a client resumes after the last id it
saw), writes each to the structured log, and fans it out to subscribers through bounded queues:
a subscriber that falls `queue_size` events behind is dropped, never waited for.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from supervisor.model import ProbeResult, RestartCause, State
from supervisor.status import ServiceStatus, StackObserver

log = structlog.get_logger(__name__)

DEFAULT_QUEUE_SIZE = 256


class EventKind(StrEnum):
    """What an event is about; a bounded set, fit for filtering."""

    STATE = "state"  # a service moved to another state (or its reason changed)
    STARTED = "started"  # a container was brought up
    EXITED = "exited"  # a container exited on its own (code, signal)
    OOM = "oom"  # a container was OOM-killed
    PROBE_FAILED = "probe-failed"  # a health probe failed (after the start period)
    RESTART = "restart"  # a restart was decided; the backoff is in the message
    RELOAD = "reload"  # a config reload was applied or refused
    OPERATOR = "operator"  # an operator's start/stop/restart, with the caller
    DOCKER = "docker"  # the Docker Engine connection was lost or came back
    UPDATE = "update"  # an image update's outcome for one service (updated, rolled back, ...)


@dataclass(frozen=True)
class Event:
    """One thing that happened; `at` is wall-clock epoch seconds."""

    id: int
    at: float
    kind: EventKind
    service: str | None
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


class Subscription:
    """A live subscriber's queue; `dropped` once it fell too far behind."""

    def __init__(self, size: int, service: str | None) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.service = service
        self.dropped = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.dropped.is_set() or (self.service is not None and event.service != self.service):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped.set()  # the reader is too slow: it goes, the daemon does not wait

    async def next(self) -> Event:
        """The next event; `SubscriberDropped` once this subscriber was cut off.

        A dropped subscriber's queue is full, so this never waits on one.
        """
        event = await self.queue.get()
        if self.dropped.is_set():
            raise SubscriberDropped
        return event


class SubscriberDropped(Exception):
    """A subscriber fell behind by a full queue and was cut off."""


class EventLog:
    """The last `keep` events, with ids, and their live subscribers."""

    def __init__(
        self,
        keep: int = 1000,
        *,
        clock: Callable[[], float] = time.time,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self._events: deque[Event] = deque(maxlen=keep)
        self._clock = clock
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._next_id = 1

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def resize(self, keep: int) -> None:
        """Hold `keep` events from now on (a reload changed api.events.keep)."""
        if keep != self._events.maxlen:
            self._events = deque(self._events, maxlen=keep)

    def publish(
        self,
        kind: EventKind,
        message: str,
        *,
        service: str | None = None,
        level: str = "info",
        **data: Any,
    ) -> Event:
        """Record an event, log it, and hand it to every live subscriber."""
        event = Event(self._next_id, self._clock(), kind, service, message, data)
        self._next_id += 1
        self._events.append(event)
        # Details nested under `data`: the log's own lines keep their top-level fields to
        # themselves (a "state changed" line and a state event must not look alike).
        fields = {"service": service} if service is not None else {}
        getattr(log, level)(message, event_id=event.id, kind=kind.value, **fields, data=data)
        for subscriber in list(self._subscribers):
            subscriber.offer(event)
        return event

    def history(
        self,
        *,
        after: int = 0,
        service: str | None = None,
        since_time: float | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Held events with id > `after` (and at >= `since_time`), oldest first; the newest
        `limit` of them when limited."""
        found = [
            e
            for e in self._events
            if e.id > after
            and (service is None or e.service == service)
            and (since_time is None or e.at >= since_time)
        ]
        return found[-limit:] if limit is not None and limit < len(found) else found

    def oldest_id(self) -> int:
        """Id of the oldest event held (last_id + 1 when none is)."""
        return self._events[0].id if self._events else self._next_id

    def subscribe(self, service: str | None = None) -> _Subscribed:
        """`with log.subscribe() as sub:` events published from now on arrive in `sub`."""
        return _Subscribed(self, Subscription(self._queue_size, service))

    def _add(self, sub: Subscription) -> None:
        self._subscribers.add(sub)

    def _remove(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)


@dataclass
class _Subscribed:
    log: EventLog
    sub: Subscription

    def __enter__(self) -> Subscription:
        self.log._add(self.sub)
        return self.sub

    def __exit__(self, *exc: object) -> None:
        self.log._remove(self.sub)


def exit_signal(exit_code: int | None) -> str | None:
    """The signal that ended a process whose exit code is 128 + N, by name."""
    if exit_code is None or not 128 < exit_code < 128 + 65:
        return None
    try:
        return signal.Signals(exit_code - 128).name
    except ValueError:
        return None


class EventRecorder(StackObserver):
    """Turns the stack's observer calls into events."""

    def __init__(self, events: EventLog) -> None:
        self._events = events
        self._states: dict[str, State] = {}
        self._reasons: dict[str, str] = {}
        self._docker_connected: bool | None = None

    def service_changed(self, status: ServiceStatus, old: State) -> None:
        self._states[status.name] = status.state
        self._reasons[status.name] = status.reason
        level = {State.FAILED: "error", State.UNHEALTHY: "warning", State.BLOCKED: "warning"}
        self._events.publish(
            EventKind.STATE,
            f"{old.value} -> {status.state.value}: {status.reason}",
            service=status.name,
            level=level.get(status.state, "info"),
            old=old.value,
            new=status.state.value,
            reason=status.reason,
        )

    def container_started(self, service: str, seconds: float) -> None:
        self._events.publish(
            EventKind.STARTED,
            f"container up in {seconds:.2f}s",
            service=service,
            seconds=round(seconds, 3),
        )

    def container_exited(
        self, service: str, exit_code: int | None, oom_killed: bool, removed: bool
    ) -> None:
        if oom_killed:
            self._events.publish(
                EventKind.OOM, "OOM-killed", service=service, level="warning", exit_code=exit_code
            )
            return
        sig = exit_signal(exit_code)
        if removed:
            message = "container removed"
        else:
            message = f"exited with code {exit_code}" + (f" ({sig})" if sig else "")
        self._events.publish(
            EventKind.EXITED,
            message,
            service=service,
            level="info" if exit_code == 0 else "warning",
            exit_code=exit_code,
            signal=sig,
            removed=removed,
        )

    def probe_done(self, service: str, result: ProbeResult) -> None:
        # Failures inside the start period are expected and do not count: not an event.
        if result.ok or self._states.get(service, State.STARTING) is State.STARTING:
            return
        self._events.publish(
            EventKind.PROBE_FAILED,
            f"probe failed: {result.detail}",
            service=service,
            level="warning",
            detail=result.detail,
        )

    def restart_issued(self, service: str, cause: RestartCause) -> None:
        reason = self._reasons.get(service, "")
        self._events.publish(
            EventKind.RESTART,
            f"restart ({cause.value}): {reason}",
            service=service,
            cause=cause.value,
            reason=reason,
        )

    def engine_link(self, connected: bool, detail: str) -> None:
        if connected is self._docker_connected:
            return
        first = self._docker_connected is None
        self._docker_connected = connected
        if connected and first:
            return  # the first connection is not news
        self._events.publish(
            EventKind.DOCKER,
            "Docker Engine connection back" if connected else "Docker Engine connection lost",
            level="info" if connected else "warning",
            connected=connected,
            detail=detail,
        )
