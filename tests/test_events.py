"""The event history and recorder, with a fake clock: no Docker, milliseconds."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from test_api import service

from supervisor.api_contract import event_json
from supervisor.events import (
    EventKind,
    EventLog,
    EventRecorder,
    SubscriberDropped,
    exit_signal,
)
from supervisor.probes import ProbeResult
from supervisor.service import State
from supervisor.status import RestartCause


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_ids_increase_and_the_history_keeps_only_the_newest() -> None:
    log = EventLog(keep=3, clock=FakeClock())
    for i in range(5):
        log.publish(EventKind.STATE, f"m{i}", service="web" if i % 2 else "db")
    assert [e.id for e in log.history()] == [3, 4, 5]
    assert log.last_id == 5 and log.oldest_id() == 3
    log.resize(10)
    log.publish(EventKind.DOCKER, "m5")
    assert [e.id for e in log.history()] == [3, 4, 5, 6]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ({}, [1, 2, 3, 4, 5]),
        ({"after": 3}, [4, 5]),
        ({"service": "web"}, [2, 4]),
        ({"since_time": 1_700_000_004.0}, [4, 5]),
        ({"limit": 2}, [4, 5]),
        ({"service": "db", "limit": 1}, [5]),
        ({"after": 5}, []),
    ],
)
def test_history_filters(query: dict[str, Any], ids: list[int]) -> None:
    log = EventLog(clock=FakeClock())
    for i in range(5):
        log.publish(EventKind.STATE, "m", service="web" if i % 2 else "db")
    assert [e.id for e in log.history(**query)] == ids


async def test_subscribers_get_their_service_and_a_slow_one_is_dropped() -> None:
    log = EventLog(queue_size=2)
    with log.subscribe() as everyone, log.subscribe("web") as web_only:
        log.publish(EventKind.STATE, "a", service="db")
        log.publish(EventKind.STATE, "b", service="web")
        assert (await web_only.next()).message == "b"
        assert (await everyone.next()).message == "a"
        # `everyone` holds one; two more overflow its queue of two: it is cut off, and
        # publishing never waited for it.
        log.publish(EventKind.STATE, "c", service="db")
        log.publish(EventKind.STATE, "d", service="db")
        assert everyone.dropped.is_set() and not web_only.dropped.is_set()
        with pytest.raises(SubscriberDropped):
            async with asyncio.timeout(1):
                while True:
                    await everyone.next()
        assert log.subscribers == 2
    assert log.subscribers == 0


@pytest.mark.parametrize(
    ("code", "name"),
    [(137, "SIGKILL"), (143, "SIGTERM"), (130, "SIGINT"), (1, None), (0, None), (None, None)],
)
def test_exit_signal(code: int | None, name: str | None) -> None:
    assert exit_signal(code) == name


def recorded() -> tuple[EventLog, EventRecorder]:
    log = EventLog(clock=FakeClock())
    return log, EventRecorder(log)


def test_state_change_exit_and_restart_with_backoff() -> None:
    log, rec = recorded()
    rec.service_changed(service("web", State.HEALTHY), State.STARTING)
    rec.container_exited("web", 137, oom_killed=False, removed=False)
    why = "exited with code 137; restart 1 in 0.2s"
    rec.service_changed(service("web", State.RESTARTING, reason=why), State.HEALTHY)
    rec.restart_issued("web", RestartCause.EXITED)
    state, exited, restarting, restart = log.history()
    assert (state.kind, state.data["old"], state.data["new"]) == (
        EventKind.STATE,
        "starting",
        "healthy",
    )
    assert exited.kind is EventKind.EXITED and exited.service == "web"
    assert exited.message == "exited with code 137 (SIGKILL)"
    assert exited.data == {"exit_code": 137, "signal": "SIGKILL", "removed": False}
    assert restarting.data["reason"] == why
    assert restart.kind is EventKind.RESTART and restart.data["cause"] == "exited"
    assert "restart 1 in 0.2s" in restart.message


@pytest.mark.parametrize(
    ("oom", "removed", "kind", "message"),
    [
        (True, False, EventKind.OOM, "OOM-killed"),
        (False, True, EventKind.EXITED, "container removed"),
        (False, False, EventKind.EXITED, "exited with code 3"),
    ],
)
def test_exit_kinds(oom: bool, removed: bool, kind: EventKind, message: str) -> None:
    log, rec = recorded()
    rec.container_exited("db", 3, oom_killed=oom, removed=removed)
    (event,) = log.history()
    assert (event.kind, event.message) == (kind, message)


def test_probe_failures_count_only_after_the_start_period() -> None:
    log, rec = recorded()
    failed = ProbeResult(False, "connection refused", 0.001, 1.0)
    rec.probe_done("web", failed)  # no state seen yet: starting
    rec.service_changed(service("web", State.STARTING), State.PENDING)
    rec.probe_done("web", failed)
    rec.service_changed(service("web", State.HEALTHY), State.STARTING)
    rec.probe_done("web", ProbeResult(True, "HTTP 200", 0.001, 2.0, 200))
    rec.probe_done("web", failed)
    probes = [e for e in log.history() if e.kind is EventKind.PROBE_FAILED]
    assert [e.message for e in probes] == ["probe failed: connection refused"]


def test_docker_link_lost_and_back_once_each() -> None:
    log, rec = recorded()
    rec.engine_link(True, "connected")  # the first connection is not news
    rec.engine_link(False, "connection refused")
    rec.engine_link(False, "connection refused")  # the stream retries: still one event
    rec.engine_link(True, "reconnected")
    assert [(e.kind, e.data["connected"]) for e in log.history()] == [
        (EventKind.DOCKER, False),
        (EventKind.DOCKER, True),
    ]


def test_event_json() -> None:
    log, rec = recorded()
    rec.service_changed(
        replace(service("web", State.FAILED), reason="crash loop"), State.RESTARTING
    )
    (event,) = log.history()
    assert event_json(event) == {
        "id": 1,
        "at": event.at,
        "kind": "state",
        "service": "web",
        "message": "restarting -> failed: crash loop",
        "data": {"old": "restarting", "new": "failed", "reason": "crash loop"},
    }
