"""The daemon's own lifecycle: one test per move of the pure machine, and the daemon's wiring
of it (a stop always wins over a reload)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fake_runtime import until

from supervisor.config import StackConfig, load_config
from supervisor.config_diff import ConfigDiff
from supervisor.daemon import Supervisor
from supervisor.daemon_lifecycle import (
    DaemonState,
    EngineReached,
    Lifecycle,
    LifecycleEvent,
    ReloadBegan,
    ReloadEnded,
    StopBegan,
    Stopped,
    TargetReached,
    advance,
)
from supervisor.model import ProbeResult

CONFIG = "version: 1\nproject: p\nservices:\n  web: {image: web:%s}\n"


WAITING = Lifecycle(DaemonState.WAITING_FOR_DOCKER)
STARTING = Lifecycle(DaemonState.STARTING)
RUNNING = Lifecycle(DaemonState.RUNNING)
STOPPING = Lifecycle(DaemonState.STOPPING)
STOPPED = Lifecycle(DaemonState.STOPPED)


def reloading(resume: DaemonState) -> Lifecycle:
    return Lifecycle(DaemonState.RELOADING, resume)


@pytest.mark.parametrize(
    ("before", "event", "after"),
    [
        # the first start
        (WAITING, EngineReached(), STARTING),
        (STARTING, TargetReached(), RUNNING),
        (RUNNING, TargetReached(), RUNNING),  # only the first time counts
        (RUNNING, EngineReached(), RUNNING),
        # reloads return where they came from
        (RUNNING, ReloadBegan(), reloading(DaemonState.RUNNING)),
        (STARTING, ReloadBegan(), reloading(DaemonState.STARTING)),
        (WAITING, ReloadBegan(), reloading(DaemonState.WAITING_FOR_DOCKER)),
        (reloading(DaemonState.RUNNING), ReloadBegan(), reloading(DaemonState.RUNNING)),
        (reloading(DaemonState.RUNNING), ReloadEnded(), RUNNING),
        (reloading(DaemonState.STARTING), ReloadEnded(), STARTING),
        (RUNNING, ReloadEnded(), RUNNING),
        # what happens during a reload is where it returns to
        (reloading(DaemonState.STARTING), TargetReached(), reloading(DaemonState.RUNNING)),
        (
            reloading(DaemonState.WAITING_FOR_DOCKER),
            EngineReached(),
            reloading(DaemonState.STARTING),
        ),
        # a stop always wins
        (WAITING, StopBegan(), STOPPING),
        (STARTING, StopBegan(), STOPPING),
        (RUNNING, StopBegan(), STOPPING),
        (reloading(DaemonState.RUNNING), StopBegan(), STOPPING),
        (STOPPING, ReloadEnded(), STOPPING),
        (STOPPING, ReloadBegan(), STOPPING),
        (STOPPING, TargetReached(), STOPPING),
        (STOPPING, EngineReached(), STOPPING),
        (STOPPING, StopBegan(), STOPPING),
        (STOPPING, Stopped(), STOPPED),
        (WAITING, Stopped(), STOPPED),  # a stop before Docker ever answered
        (STOPPED, StopBegan(), STOPPED),
        (STOPPED, ReloadEnded(), STOPPED),
    ],
)
def test_move(before: Lifecycle, event: LifecycleEvent, after: Lifecycle) -> None:
    assert advance(before, event) == after


class ApplyingStack:
    """Stands in for the stack: settled, and an apply that waits until released."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.applying = asyncio.Event()
        self.release = asyncio.Event()

    def settled(self) -> bool:
        return True

    async def apply(self, new: StackConfig, diff: ConfigDiff) -> None:
        self.applying.set()
        await self.release.wait()
        self.config = new


def state_of(supervisor: Supervisor) -> DaemonState:
    # Read afresh: the state moves behind mypy's back while the test awaits.
    return supervisor.state


async def test_a_stop_during_a_reload_is_not_undone_when_the_apply_ends(tmp_path: Path) -> None:
    path = tmp_path / "ovpn.yaml"
    path.write_text(CONFIG % "1")
    supervisor = Supervisor(path, load_config(path), runtime=None)  # type: ignore[arg-type]
    stack = ApplyingStack(supervisor.config)
    supervisor.stack = stack  # type: ignore[assignment]
    supervisor.advance(EngineReached())
    supervisor.advance(TargetReached())
    assert supervisor.state is DaemonState.RUNNING
    path.write_text(CONFIG % "2")
    reload = asyncio.create_task(supervisor._reload())
    await until(stack.applying.is_set, "the apply began")
    assert state_of(supervisor) is DaemonState.RELOADING
    supervisor.stack_stopping()  # SIGTERM: the stack began to stop
    stack.release.set()
    result = await reload
    assert result.ok
    assert state_of(supervisor) is DaemonState.STOPPING


def test_a_service_s_status_mark_moves_with_its_own_changes_and_with_any_reload(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ovpn.yaml"
    path.write_text(CONFIG % "1")
    supervisor = Supervisor(path, load_config(path), runtime=None)  # type: ignore[arg-type]
    web, db = supervisor.service_mark("web"), supervisor.service_mark("db")
    supervisor.probe_done("web", ProbeResult(ok=True, detail="HTTP 200", latency=0.01, at=0.0))
    assert supervisor.service_mark("web") > web
    assert supervisor.service_mark("db") == db  # another service's change leaves it alone
    supervisor.reload_done(ok=True, at=0.0)
    assert supervisor.service_mark("db") > db  # a reload may change what any status shows
