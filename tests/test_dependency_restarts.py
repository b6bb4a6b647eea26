"""`restart: true` dependents follow their dependency, once, after it is back."""

from __future__ import annotations

from supervisor.config import ServiceType, parse_config
from supervisor.dependency_restarts import DependencyRestarts
from supervisor.service import RestartCause, RestartRequested, State
from supervisor.status import ServiceStatus

CONFIG = parse_config(
    """
version: 1
project: p
services:
  db: {image: x, health: {exec: [true]}}
  app: {image: x, depends_on: {db: {condition: healthy, restart: true}}}
  other: {image: x, depends_on: {db: healthy}}
"""
)


def status(name: str, state: State) -> ServiceStatus:
    return ServiceStatus(
        name, ServiceType.SERVICE, "x", state, "", 0.0, None, 0, None, None, True, None, False, ()
    )


class Harness:
    def __init__(self) -> None:
        self.states = {n: State.HEALTHY for n in CONFIG.services}
        self.requests: list[tuple[str, RestartRequested]] = []
        graph = CONFIG.graph()
        self.observer = DependencyRestarts(
            lambda: CONFIG.services,
            lambda: graph,
            self.states.__getitem__,
            lambda name, event: self.requests.append((name, event)),
        )

    def move(self, name: str, new: State) -> None:
        old, self.states[name] = self.states[name], new
        self.observer.service_changed(status(name, new), old)


def test_dependent_with_restart_true_follows_once_dependency_is_healthy_again() -> None:
    h = Harness()
    h.move("db", State.UNHEALTHY)
    h.move("db", State.RESTARTING)
    h.move("db", State.STARTING)
    assert h.requests == []  # not yet healthy
    h.move("db", State.HEALTHY)
    assert h.requests == [
        ("app", RestartRequested("dependency db restarted", RestartCause.DEPENDENCY))
    ]
    h.move("db", State.HEALTHY)
    assert len(h.requests) == 1


def test_dependent_that_restarted_itself_meanwhile_is_not_restarted_again() -> None:
    h = Harness()
    h.move("db", State.RESTARTING)
    h.move("app", State.RESTARTING)
    h.move("db", State.STARTING)
    h.move("app", State.STARTING)  # its own restart was gated on db
    h.move("db", State.HEALTHY)
    assert h.requests == []
