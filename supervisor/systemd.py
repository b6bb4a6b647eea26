"""systemd integration: READY/STATUS/EXTEND_TIMEOUT/WATCHDOG/RELOADING/STOPPING over sd_notify.

Everything is sent from the event loop: a hung loop stops the watchdog pings and the start-up
extensions, so systemd kills and restarts the daemon. Without NOTIFY_SOCKET it all is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import sdnotify  # type: ignore[import-untyped]  # ships no type information
import structlog

from supervisor.daemon import Component, Supervisor
from supervisor.daemon_lifecycle import DaemonState
from supervisor.model import ProbeResult, State
from supervisor.status import ServiceStatus, StackObserver, summarize

log = structlog.get_logger(__name__)

# While starting, systemd's start timeout is pushed this far ahead, every EXTEND_EVERY seconds:
# a slow database must not make systemd kill the start (containers/podman#27290).
EXTEND_BY = 30.0
EXTEND_EVERY = 10.0
# How often STATUS is re-derived from the daemon's state (e.g. "waiting for Docker").
STATUS_EVERY = 1.0
# States in which a service with a probe is probed; no probe result for longer than
# PROBE_STALL_FACTOR * (interval + timeout) + PROBE_STALL_GRACE means supervision is stuck.
PROBING = frozenset({State.STARTING, State.HEALTHY, State.UNHEALTHY})
PROBE_STALL_FACTOR = 2.0
PROBE_STALL_GRACE = 5.0
WAITING_FOR_DOCKER = "waiting for Docker"


class Notifier(Protocol):
    """Where sd_notify messages go."""

    def notify(self, message: str) -> None: ...


class SdNotifier:
    """sd_notify through the sdnotify package; silent when NOTIFY_SOCKET is unset."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None

    def notify(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)


def watchdog_interval(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked for."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return None  # meant for another process (we were forked or exec'd by it)
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring invalid WATCHDOG_USEC", value=usec)
        return None
    return value / 2_000_000 if value > 0 else None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as RELOADING=1's MONOTONIC_USEC= wants it."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class SupervisionProgress(StackObserver):
    """Whether supervision is moving: every service that should be probed got a result lately.

    A live event loop is not enough: a wedged prober or Docker call pool leaves the loop
    spinning while nothing is watched any more. Then the watchdog must stop being fed.
    """

    def __init__(self, supervisor: Supervisor, clock: Callable[[], float]) -> None:
        self._supervisor = supervisor
        self._clock = clock
        self._states: dict[str, State] = {}
        self._has_probe: dict[str, bool] = {}
        self._last: dict[str, float] = {}

    def service_changed(self, status: ServiceStatus, old: State) -> None:
        self._states[status.name] = status.state
        self._has_probe[status.name] = status.has_probe
        self._last[status.name] = self._clock()

    def probe_done(self, service: str, result: ProbeResult) -> None:
        self._last[service] = self._clock()

    def stalled(self) -> str | None:
        """Why supervision looks stuck, or None while it makes progress."""
        now = self._clock()
        for name, state in self._states.items():
            service = self._supervisor.config.services.get(name)
            if state not in PROBING or not self._has_probe.get(name) or service is None:
                continue
            health = service.health
            if health is None:
                continue
            limit = (
                PROBE_STALL_FACTOR * (max(health.interval, health.start_interval) + health.timeout)
                + PROBE_STALL_GRACE
            )
            quiet = now - self._last.get(name, now)
            if quiet > limit:
                return f"no probe result for {name} in {quiet:.0f}s (limit {limit:.0f}s)"
        return None


class SystemdNotifier(StackObserver):
    """Tells systemd where the daemon is; one per daemon, registered with its observers."""

    def __init__(
        self,
        supervisor: Supervisor,
        notifier: Notifier,
        *,
        startup_timeout: float,
        watchdog: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._supervisor = supervisor
        self._notifier = notifier
        self._clock = clock
        self._watchdog = watchdog
        self._deadline = clock() + startup_timeout
        self._next_extend = clock()
        self._next_ping = clock()
        self.progress = SupervisionProgress(supervisor, clock)
        self.ready = False
        self.stopping = False
        self._status = ""
        self._stall_logged: str | None = None

    # -------------------------------------------------------------- observer hooks

    def service_changed(self, status: ServiceStatus, old: State) -> None:
        self.progress.service_changed(status, old)
        self.refresh()

    def probe_done(self, service: str, result: ProbeResult) -> None:
        self.progress.probe_done(service, result)

    def stack_stopping(self) -> None:
        self.stop()

    def component_came_up(self, component: str) -> None:
        self.refresh()

    def reload_started(self) -> None:
        # Before READY=1 systemd is still activating us: a reload then is not a unit reload.
        if self.ready and not self.stopping:
            self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}\nSTATUS=reloading")

    def reload_done(self, ok: bool, at: float) -> None:
        if not self.ready or self.stopping:
            return
        result = self._supervisor.last_reload
        text = self._summary()
        if not ok:
            reason = result.errors[0] if result is not None and result.errors else "invalid config"
            text = f"reload refused ({reason}); {text}"
        self._send("READY=1\n" + self._status_line(text))

    # -------------------------------------------------------------- state

    def _summary(self) -> str:
        supervisor = self._supervisor
        if supervisor.state is DaemonState.WAITING_FOR_DOCKER:
            return WAITING_FOR_DOCKER
        if supervisor.stack is None:
            return "starting"
        return summarize(supervisor.stack.statuses())

    def _status_line(self, text: str) -> str:
        self._status = text
        return f"STATUS={text}"

    def _send(self, message: str) -> None:
        log.debug("sd_notify", message=message.replace("\n", " "))
        self._notifier.notify(message)

    def refresh(self) -> None:
        """Send READY=1 once the target is reached, and STATUS= whenever the summary changes."""
        if self.stopping:
            return
        stack = self._supervisor.stack
        summary = self._summary()
        if (
            not self.ready
            and stack is not None
            and stack.target_reached()
            and not self._supervisor.coming_up
        ):
            self.ready = True
            log.info("ready: stack reached its target", status=summary)
            self._send("READY=1\n" + self._status_line(summary))
        elif summary != self._status:
            self._send(self._status_line(summary))

    def tick(self) -> None:
        """Periodic duties: start-up extension or deadline, STATUS refresh, watchdog ping."""
        now = self._clock()
        self.refresh()
        if not self.ready and not self.stopping:
            if now >= self._deadline:
                self.ready = True
                summary = self._summary()
                log.warning("startup deadline passed; reporting ready, degraded", status=summary)
                self._send("READY=1\n" + self._status_line(f"degraded: {summary}"))
            elif now >= self._next_extend:
                self._send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1_000_000)}")
                self._next_extend = now + EXTEND_EVERY
        if self._watchdog is not None and now >= self._next_ping:
            stalled = self.progress.stalled()
            if stalled is None:
                self._send("WATCHDOG=1")
                self._stall_logged = None
                self._next_ping = now + self._watchdog
            elif stalled != self._stall_logged:
                log.error("supervision stalled; no longer feeding the watchdog", reason=stalled)
                self._stall_logged = stalled

    def next_wake(self) -> float:
        """Seconds until tick() has something due."""
        due = STATUS_EVERY
        if self._watchdog is not None:
            due = min(due, max(0.0, self._next_ping - self._clock()))
        return due

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self._send("STOPPING=1\nSTATUS=stopping")


@asynccontextmanager
async def _notifying(
    supervisor: Supervisor, notifier: Notifier | None
) -> AsyncIterator[SystemdNotifier]:
    sd = SystemdNotifier(
        supervisor,
        notifier or SdNotifier(),
        startup_timeout=supervisor.config.systemd.startup_timeout,
        watchdog=watchdog_interval(),
    )
    supervisor.observers.add(sd)

    async def ticking() -> None:
        while True:
            sd.tick()
            await asyncio.sleep(sd.next_wake())

    async with asyncio.TaskGroup() as group:
        task = group.create_task(ticking(), name="systemd-notify")
        try:
            yield sd
        finally:
            task.cancel()
            sd.stop()


def systemd_component(notifier: Notifier | None = None) -> Component:
    """The daemon component that keeps systemd informed (a no-op without NOTIFY_SOCKET)."""

    def component(supervisor: Supervisor) -> AbstractAsyncContextManager[SystemdNotifier]:
        return _notifying(supervisor, notifier)

    return component
