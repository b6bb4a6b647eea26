"""`depends_on: {db: {restart: true}}`: restart a dependent once its dependency is back."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from supervisor.config import ServiceConfig
from supervisor.graph import DependencyGraph
from supervisor.service import CONTAINER_UP, RestartCause, RestartRequested, State, condition_met
from supervisor.status import ServiceStatus, StackObserver

log = structlog.get_logger(__name__)


class DependencyRestarts(StackObserver):
    """Asks `restart: true` dependents to follow a dependency that went down and came back."""

    def __init__(
        self,
        services: Callable[[], Mapping[str, ServiceConfig]],
        graph: Callable[[], DependencyGraph],
        state_of: Callable[[str], State],
        request: Callable[[str, RestartRequested], None],
    ) -> None:
        self._services = services
        self._graph = graph
        self._state_of = state_of
        self._request = request
        # dependency -> dependents to restart once it meets their condition again
        self._waiting: dict[str, set[str]] = {}

    def service_changed(self, status: ServiceStatus, old: State) -> None:
        name, new = status.name, status.state
        if old in CONTAINER_UP and new in (State.RESTARTING, State.PENDING):
            followers = {
                dependent
                for dependent in self._graph().dependents_of(name)
                if self._services()[dependent].depends_on[name].restart
            }
            if followers:
                self._waiting.setdefault(name, set()).update(followers)
            return
        if old not in CONTAINER_UP and new in CONTAINER_UP:
            # It (re)started itself, gated on its dependencies: nothing left to follow.
            for dependents in self._waiting.values():
                dependents.discard(name)
        waiting = self._waiting.get(name)
        if not waiting:
            return
        for dependent in sorted(waiting):
            dependency = self._services()[dependent].depends_on.get(name)
            if dependency is None:
                waiting.discard(dependent)  # no longer depends on it (reloaded)
            elif condition_met(dependency.condition, new):
                waiting.discard(dependent)
                if self._state_of(dependent) in CONTAINER_UP:
                    log.info("restarting dependent", service=dependent, dependency=name)
                    self._request(
                        dependent,
                        RestartRequested(f"dependency {name} restarted", RestartCause.DEPENDENCY),
                    )
        if not waiting:
            del self._waiting[name]
