"""`ServiceRunner` without Docker: the fake engine and a fake clock, one behaviour per test."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fake_runtime import FakeClock, FakeProber, FakeRuntime, settle, until

from supervisor.config import parse_config
from supervisor.docker_api import ContainerEvent, ContainerInfo, DockerError
from supervisor.engine_gate import EngineGate
from supervisor.engine_turns import EngineTurns, ServiceTurns
from supervisor.runner import ServiceRunner
from supervisor.service import ShutdownBegan, StartRequested, State, StopRequested
from supervisor.shutdown_stop import KILLED_WITHIN
from supervisor.spec import container_spec
from supervisor.state_board import StateBoard
from supervisor.status import StackObserver

DEFAULTS = (
    "defaults:\n"
    "  restart: {policy: on-failure, backoff: {initial: 2s, max: 8s},"
    " limit: {count: 5, window: 60s}}\n"
)


def config(services: str) -> str:
    return f"version: 1\nproject: p\n{DEFAULTS}services:\n" + textwrap.indent(
        textwrap.dedent(services), "  "
    )


WEB = config(
    """
    web:
      image: web:1
      health: {http: {port: 80}, interval: 5s, start_interval: 1s, retries: 2}
    """
)
JOB = config(
    """
    migrate: {image: app:1, type: job}
    """
)


@dataclass
class Engine:
    clock: FakeClock
    runtime: FakeRuntime
    prober: FakeProber
    gate: EngineGate
    board: StateBoard


def engine(*images: str) -> Engine:
    clock = FakeClock()
    runtime = FakeRuntime(clock, images)
    return Engine(clock, runtime, FakeProber(runtime), EngineGate(), StateBoard())


def make_runner(
    e: Engine, text: str, name: str, turns: ServiceTurns | None = None
) -> ServiceRunner:
    stack = parse_config(text)
    return ServiceRunner(
        stack,
        stack.services[name],
        e.runtime,
        e.prober,
        e.board,
        e.clock,
        StackObserver(),
        e.gate,
        turns=turns,
    )


@asynccontextmanager
async def running(e: Engine, runner: ServiceRunner) -> AsyncIterator[ServiceRunner]:
    """The runner at work, with the engine's events routed to it as the stack does."""

    async def route() -> None:
        async for event in e.runtime.events("p"):
            if isinstance(event, ContainerEvent):
                runner.docker_event(
                    event.action, event.container_id, event.attributes, event.time_ns
                )

    tasks = [asyncio.create_task(route()), asyncio.create_task(runner.run())]
    try:
        yield runner
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def state(runner: ServiceRunner, wanted: State) -> None:
    await until(lambda: runner.machine.state is wanted, f"{runner.name} {wanted.value}")


async def test_a_service_without_dependencies_is_pulled_created_started_and_probed() -> None:
    e = engine()
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        assert e.runtime.calls == ["pull web:1", "create web", "start web"]
        await e.clock.advance(0)  # the first probe runs at once
        await state(runner, State.HEALTHY)
        assert e.prober.probed == ["web"]
        await e.clock.advance(1.0)  # the wait after the first success was still the fast one
        e.prober.probed.clear()
        await e.clock.advance(4.9)
        assert e.prober.probed == []  # healthy: at the steady interval now
        await e.clock.advance(0.2)
        assert e.prober.probed == ["web"]


async def test_a_crash_restarts_after_the_backoff_and_the_backoff_doubles() -> None:
    e = engine("web:1")
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        e.runtime.exit("web", 1)
        await state(runner, State.RESTARTING)
        await e.clock.advance(1.9)
        assert e.runtime.count("start web") == 1  # still waiting out 2 s
        await e.clock.advance(0.2)
        await until(lambda: runner.machine.container_up, "web up again")
        assert e.runtime.count("start web") == 2
        assert e.runtime.count("create web") == 1  # the same container, started again
        e.runtime.exit("web", 1)
        await state(runner, State.RESTARTING)
        await e.clock.advance(3.9)
        assert e.runtime.count("start web") == 2  # now 4 s
        await e.clock.advance(0.2)
        await until(lambda: e.runtime.count("start web") == 3, "third start")
        assert runner.machine.restarts == 2


async def test_a_running_container_with_the_current_config_is_adopted() -> None:
    e = engine("web:1")
    runner = make_runner(e, WEB, "web")
    cid = await e.runtime.create_container(runner.spec)
    await e.runtime.start_container(cid)
    e.runtime.calls.clear()
    async with running(e, runner):
        await state(runner, State.STARTING)
        assert runner.machine.container_id == cid
        assert e.runtime.calls == []  # neither created nor started again


async def test_a_container_with_an_older_config_is_recreated() -> None:
    e = engine("web:1", "web:0")
    old = parse_config(WEB.replace("web:1", "web:0"))
    cid = await e.runtime.create_container(container_spec(old, old.services["web"]))
    await e.runtime.start_container(cid)
    e.runtime.calls.clear()
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        assert e.runtime.calls == ["stop web", "remove web", "create web", "start web"]
        assert runner.machine.container_id != cid


async def test_a_stopped_container_with_the_current_config_is_started_not_recreated() -> None:
    e = engine("web:1")
    runner = make_runner(e, WEB, "web")
    cid = await e.runtime.create_container(runner.spec)
    e.runtime.calls.clear()
    async with running(e, runner):
        await state(runner, State.STARTING)
        assert e.runtime.calls == ["start web"]
        assert runner.machine.container_id == cid


async def test_a_job_found_completed_is_kept_and_not_run_again() -> None:
    e = engine("app:1")
    runner = make_runner(e, JOB, "migrate")
    cid = await e.runtime.create_container(runner.spec)
    await e.runtime.start_container(cid)
    e.runtime.exit("migrate", 0)
    e.runtime.calls.clear()
    runner.adopt_completed_job = True
    async with running(e, runner):
        await state(runner, State.COMPLETED)
        assert e.runtime.calls == []


async def test_a_job_runs_once_and_completes() -> None:
    e = engine("app:1")
    e.runtime.exit_on_start["migrate"] = 0
    async with running(e, make_runner(e, JOB, "migrate")) as runner:
        await state(runner, State.COMPLETED)
        await e.clock.advance(60)
        assert e.runtime.count("start migrate") == 1


async def test_a_first_start_the_engine_refuses_fails_until_an_operator_starts_it() -> None:
    e = engine("web:1")
    e.runtime.refuse_start["web"] = "port is already allocated"
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.FAILED)
        assert "port is already allocated" in runner.machine.reason
        await e.clock.advance(600)
        assert e.runtime.count("start web") == 1  # never retried on its own
        del e.runtime.refuse_start["web"]
        runner.post(StartRequested())
        await until(lambda: runner.machine.container_up, "web up")
        assert e.runtime.count("create web") == 1  # the container made the first time


async def test_an_operator_stop_is_never_undone_by_a_crash_or_a_timer() -> None:
    e = engine("web:1")
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        e.runtime.exit("web", 1)
        await state(runner, State.RESTARTING)
        runner.post(StopRequested(by_operator=True))
        await state(runner, State.STOPPED)
        await e.clock.advance(600)  # the backoff it had scheduled is long past
        assert runner.machine.state is State.STOPPED
        assert e.runtime.count("start web") == 1
        runner.post(StartRequested())
        await state(runner, State.STARTING)


async def test_an_engine_outage_defers_the_start_until_the_gate_reopens() -> None:
    e = engine("web:1")
    e.runtime.down = True
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await until(lambda: not e.gate.is_open, "the gate closes")
        await settle()
        assert runner.machine.state is State.PENDING
        assert e.runtime.calls == []
        e.runtime.down = False
        e.gate.reopen()
        await state(runner, State.STARTING)
        assert e.runtime.calls == ["create web", "start web"]


def slow_stop(e: Engine) -> asyncio.Event:
    """The engine's stop ends the container (its `die` goes out) but answers only once the
    returned event is set: its clean-up after the exit, which takes a while under load."""
    answered = asyncio.Event()
    stop = e.runtime.stop_container

    async def stop_then_clean_up(container_id: str, timeout: float) -> None:
        await stop(container_id, timeout)
        await answered.wait()

    e.runtime.stop_container = stop_then_clean_up  # type: ignore[method-assign]
    return answered


def begin_shutdown(runner: ServiceRunner) -> None:
    """What the stack does to a service at SIGTERM: shutdown begins, then its stop."""
    runner.post(ShutdownBegan())
    runner.post(StopRequested())


async def test_at_shutdown_the_stop_signal_is_sent_and_the_die_counts_as_stopped() -> None:
    e = engine("web:1")
    slow_stop(e)  # never answers: the shutdown path must not need the stop call
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        begin_shutdown(runner)
        await state(runner, State.STOPPED)
        assert e.runtime.calls[-1] == "signal web SIGTERM"
        assert e.runtime.count("stop web") == 0


async def test_at_shutdown_an_ignored_stop_signal_is_followed_by_sigkill_after_grace() -> None:
    e = engine("web:1")
    e.runtime.ignore_stop_signal.add("web")
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        begin_shutdown(runner)
        await until(lambda: "signal web SIGTERM" in e.runtime.calls, "the stop signal sent")
        await e.clock.advance(9.9)
        assert runner.machine.state is State.STOPPING  # still within its 10 s grace period
        assert e.runtime.count("kill web") == 0
        await e.clock.advance(0.2)
        await state(runner, State.STOPPED)
        assert e.runtime.count("kill web") == 1
        assert e.runtime.count("stop web") == 0


async def test_at_shutdown_with_no_die_event_the_engines_stop_call_decides() -> None:
    e = engine("web:1")
    e.runtime.ignore_stop_signal.add("web")
    kill = e.runtime.kill_container

    async def kill_unseen(container_id: str, signal: str = "SIGKILL") -> bool:
        # The signal lands, but its `die` never reaches the daemon (event stream lost).
        if signal == "SIGKILL":
            e.runtime.calls.append("kill web (unseen)")
            return True
        return await kill(container_id, signal)

    e.runtime.kill_container = kill_unseen  # type: ignore[method-assign]
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        begin_shutdown(runner)
        await until(lambda: "signal web SIGTERM" in e.runtime.calls, "the stop signal sent")
        await e.clock.advance(10.1)
        await until(lambda: "kill web (unseen)" in e.runtime.calls, "SIGKILL sent")
        assert runner.machine.state is State.STOPPING
        await e.clock.advance(KILLED_WITHIN + 0.1)
        await state(runner, State.STOPPED)
        assert e.runtime.count("stop web") == 1


async def test_at_shutdown_a_container_that_already_exited_is_not_waited_for() -> None:
    e = engine("web:1")
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        container = e.runtime.container("web")
        assert container is not None
        container.running = False  # exited, its `die` not seen yet
        begin_shutdown(runner)
        await state(runner, State.STOPPED)
        assert e.runtime.count("stop web") == 0


async def test_at_shutdown_a_stop_signal_the_engine_refuses_falls_back_to_its_stop_call() -> None:
    e = engine("web:1")

    async def refuse(container_id: str, signal: str = "SIGKILL") -> bool:
        raise DockerError(f"kill container {container_id}: engine hiccup")

    e.runtime.kill_container = refuse  # type: ignore[method-assign]
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        begin_shutdown(runner)
        await state(runner, State.STOPPED)
        assert e.runtime.count("stop web") == 1


async def test_outside_shutdown_a_stop_waits_for_the_engine_to_answer() -> None:
    e = engine("web:1")
    answered = slow_stop(e)
    async with running(e, make_runner(e, WEB, "web")) as runner:
        await state(runner, State.STARTING)
        runner.post(StopRequested(by_operator=True))
        await state(runner, State.STOPPING)
        await settle()
        assert runner.machine.state is State.STOPPING  # the die alone is not enough here
        answered.set()
        await state(runner, State.STOPPED)


async def test_a_crash_after_a_long_run_is_restarted_with_nothing_before_the_start() -> None:
    e = engine("web:1")
    inspect = e.runtime.inspect_container

    async def logged_inspect(name_or_id: str) -> ContainerInfo | None:
        e.runtime.calls.append("inspect")
        return await inspect(name_or_id)

    e.runtime.inspect_container = logged_inspect  # type: ignore[method-assign]
    text = config("web: {image: web:1, restart: {reset_after: 1s}}\n")
    async with running(e, make_runner(e, text, "web")) as runner:
        await state(runner, State.RUNNING)
        await e.clock.advance(1.0)  # ran for reset_after
        before = len(e.runtime.calls)
        e.runtime.exit("web", 1)
        # No timer to wait out (the clock stands still), and the start is the first call.
        await until(lambda: e.runtime.count("start web") == 2, "web started again")
        assert e.runtime.calls[before:][0] == "start web"
        assert runner.machine.restarts == 1


async def test_an_exec_probe_at_the_start_pace_waits_behind_a_longer_chain_s_start() -> None:
    text = config(
        """
        db:
          image: db:1
          health: {exec: [pg_isready], interval: 5s, start_interval: 1s}
        """
    )
    e = engine("db:1")
    turns = EngineTurns(max_wait=30)
    runner = make_runner(e, text, "db", ServiceTurns(turns, lambda: 1))
    hog_done = asyncio.Event()

    async def longer_chain_start() -> None:
        async with turns.turn(3):
            await hog_done.wait()

    e.prober.failing.add("db")  # still warming up
    async with running(e, runner):
        await state(runner, State.STARTING)
        await until(lambda: e.prober.probed == ["db"], "the first probe")
        hog = asyncio.create_task(longer_chain_start())
        await settle()
        e.prober.probed.clear()
        await e.clock.advance(1.0)
        assert e.prober.probed == []  # behind the start: the engine is busy enough
        hog_done.set()
        await hog
        await until(lambda: e.prober.probed == ["db"], "the probe after the start")
        e.prober.failing.clear()
        await e.clock.advance(1.0)
        await state(runner, State.HEALTHY)
        async with turns.turn(3):  # at the steady pace it waits for nothing
            e.prober.probed.clear()
            await e.clock.advance(5.0)
            assert e.prober.probed == ["db"]
