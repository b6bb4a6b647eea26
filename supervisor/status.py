"""Read-only snapshots of the stack for the API, metrics and systemd, and the observer port."""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.config import ServiceType
from supervisor.model import ProbeResult, RestartCause, State

__all__ = ["Observers", "RestartCause", "ServiceStatus", "StackObserver", "summarize"]


@dataclass(frozen=True)
class ServiceStatus:
    """One service as the daemon sees it. Environment values never appear here, only keys."""

    name: str
    type: ServiceType
    image: str
    state: State
    reason: str
    since: float  # wall-clock epoch seconds, for display
    container_id: str | None
    restarts: int
    last_exit_code: int | None
    last_probe: ProbeResult | None
    has_probe: bool
    blocked_by: str | None
    operator_stopped: bool
    environment_keys: tuple[str, ...]

    @property
    def up_to_target(self) -> bool:
        """Where this service should be once the stack is up."""
        if self.type is ServiceType.JOB:
            return self.state is State.COMPLETED
        if self.has_probe:
            return self.state is State.HEALTHY
        return self.state in (State.RUNNING, State.HEALTHY)


class StackObserver:
    """Told about what happens in the stack (metrics, systemd STATUS); override what you need."""

    def service_changed(self, status: ServiceStatus, old: State) -> None:
        """A service moved to another state (or the reason for its state changed)."""

    def probe_done(self, service: str, result: ProbeResult) -> None:
        """A health probe finished."""

    def container_started(self, service: str, seconds: float) -> None:
        """A container was brought up (adopted, started or created and started)."""

    def restart_issued(self, service: str, cause: RestartCause) -> None:
        """A restart was decided (the backoff may still be running)."""

    def container_exited(
        self, service: str, exit_code: int | None, oom_killed: bool, removed: bool
    ) -> None:
        """A service's container went down on its own (seen by the engine, not asked for)."""

    def engine_link(self, connected: bool, detail: str) -> None:
        """The Docker Engine's event stream connected (again) or broke."""

    def stack_stopping(self) -> None:
        """The daemon began stopping the whole stack."""

    def component_came_up(self, component: str) -> None:
        """A component that comes up late (the API server) serves now, or gave up."""

    def reload_started(self) -> None:
        """A config reload began (systemd: RELOADING=1)."""

    def reload_done(self, ok: bool, at: float) -> None:
        """A config reload was applied (ok) or refused; `at` is wall-clock epoch seconds."""

    def update_done(self, ok: bool, outcomes: dict[str, str], at: float) -> None:
        """An image update finished; `outcomes`: service -> updated, rolled-back, failed…"""


class Observers(StackObserver):
    """Fans every notification out to the registered observers."""

    def __init__(self) -> None:
        self._observers: list[StackObserver] = []

    def add(self, observer: StackObserver) -> None:
        self._observers.append(observer)

    def stack_stopping(self) -> None:
        for o in self._observers:
            o.stack_stopping()

    def component_came_up(self, component: str) -> None:
        for o in self._observers:
            o.component_came_up(component)

    def service_changed(self, status: ServiceStatus, old: State) -> None:
        for o in self._observers:
            o.service_changed(status, old)

    def probe_done(self, service: str, result: ProbeResult) -> None:
        for o in self._observers:
            o.probe_done(service, result)

    def container_started(self, service: str, seconds: float) -> None:
        for o in self._observers:
            o.container_started(service, seconds)

    def restart_issued(self, service: str, cause: RestartCause) -> None:
        for o in self._observers:
            o.restart_issued(service, cause)

    def container_exited(
        self, service: str, exit_code: int | None, oom_killed: bool, removed: bool
    ) -> None:
        for o in self._observers:
            o.container_exited(service, exit_code, oom_killed, removed)

    def engine_link(self, connected: bool, detail: str) -> None:
        for o in self._observers:
            o.engine_link(connected, detail)

    def reload_started(self) -> None:
        for o in self._observers:
            o.reload_started()

    def reload_done(self, ok: bool, at: float) -> None:
        for o in self._observers:
            o.reload_done(ok, at)

    def update_done(self, ok: bool, outcomes: dict[str, str], at: float) -> None:
        for o in self._observers:
            o.update_done(ok, outcomes, at)


def summarize(statuses: list[ServiceStatus]) -> str:
    """One line for systemd STATUS=: '9/9 up' or what is not where it should be."""
    total = len(statuses)
    good = sum(s.up_to_target for s in statuses)
    if good == total:
        return f"{good}/{total} up"
    problems = [
        f"{s.name} {s.state.value}" + (f" ({s.reason})" if s.state is State.RESTARTING else "")
        for s in statuses
        if not s.up_to_target
    ]
    return f"{good}/{total} up; " + ", ".join(problems[:3]) + (" …" if len(problems) > 3 else "")
