"""`Stack` without Docker: the whole stack on the fake engine and a fake clock."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from fake_runtime import FakeClock, FakeProber, FakeRuntime, settle, until

from supervisor.config import StackConfig, parse_config
from supervisor.config_diff import diff_configs
from supervisor.docker_api import DockerError
from supervisor.service import RestartCause, State
from supervisor.spec import NetworkSpec, container_spec
from supervisor.stack import RESYNC_INTERVAL, OperatorCommand, Stack, StackError

HEALTH = "{http: {port: 80}, interval: 5s, start_interval: 1s, retries: 2, start_period: 30s}"


def config(services: str) -> StackConfig:
    text = (
        "version: 1\nproject: p\n"
        "defaults:\n"
        "  restart: {policy: on-failure, backoff: {initial: 2s, max: 8s},"
        " limit: {count: 5, window: 60s}}\n"
        "services:\n" + textwrap.indent(textwrap.dedent(services), "  ")
    )
    return parse_config(text)


# db <- app <- web; app follows db's restarts.
THREE = f"""
db: {{image: db:1, health: {HEALTH}}}
app:
  image: app:1
  health: {HEALTH}
  depends_on: {{db: {{condition: healthy, restart: true}}}}
web:
  image: web:1
  depends_on: {{app: {{condition: started}}}}
"""
# A migration job and the app that waits for it to complete.
JOB_APP = """
migrate: {image: job:1, type: job}
app:
  image: app:1
  depends_on: {migrate: {condition: completed}}
"""
IMAGES = ("db:1", "app:1", "app:2", "web:1", "job:1")


@dataclass
class Running:
    stack: Stack
    clock: FakeClock
    runtime: FakeRuntime
    prober: FakeProber

    def state(self, name: str) -> State:
        return self.stack.board.state(name)

    async def reaches(self, **states: State) -> None:
        await until(
            lambda: all(self.state(n) is s for n, s in states.items()),
            f"{states} (now {self.stack.states()})",
        )

    def starts(self) -> list[str]:
        return [c.split()[1] for c in self.runtime.calls if c.startswith("start ")]


@asynccontextmanager
async def running(
    cfg: StackConfig, runtime: FakeRuntime | None = None, failing: tuple[str, ...] = ()
) -> AsyncIterator[Running]:
    clock = runtime.clock if runtime is not None else FakeClock()
    runtime = runtime or FakeRuntime(clock, IMAGES)
    prober = FakeProber(runtime)
    prober.failing.update(failing)
    stack = Stack(cfg, runtime, prober, clock=clock)
    stop, hurry = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(stack.run(stop, hurry))
    try:
        yield Running(stack, clock, runtime, prober)
        stop.set()
        await until(task.done, "the stack stopped")
        task.result()
    finally:
        task.cancel()


async def test_services_start_in_dependency_order_and_stop_in_reverse() -> None:
    async with running(config(THREE), failing=("db",)) as r:
        await r.reaches(db=State.STARTING)
        await r.clock.advance(10)
        assert r.starts() == ["db"]  # app waits for db to be healthy, not merely started
        assert r.runtime.count("create app") == 1  # but its container is ready (made ahead)
        r.prober.failing.clear()
        await r.clock.advance(1)
        await r.reaches(db=State.HEALTHY, web=State.RUNNING)
        assert r.starts() == ["db", "app", "web"]
        assert r.runtime.count("create app") == 1  # made ahead: meeting db cost only a start
    # At shutdown a container gets its stop signal; its `die` event lets the next level go.
    stops = [c.split()[1] for c in r.runtime.calls if c.startswith(("stop ", "signal "))]
    assert stops == ["web", "app", "db"]


async def test_a_failing_job_blocks_what_depends_on_it() -> None:
    cfg = config(JOB_APP + "web: {image: web:1, depends_on: [app]}\n")
    runtime = FakeRuntime(FakeClock(), IMAGES)
    runtime.exit_on_start["migrate"] = 3
    async with running(cfg, runtime) as r:
        await r.reaches(migrate=State.FAILED, app=State.BLOCKED, web=State.BLOCKED)
        assert "code 3" in r.stack.runners["migrate"].machine.reason
        # Whether or not a container was made ahead for them, none is left.
        await until(lambda: r.runtime.container("app") is None, "app's container removed")
        assert r.runtime.container("web") is None
        await r.clock.advance(120)
        assert r.starts() == ["migrate"]


async def test_a_job_that_completes_lets_its_dependents_start() -> None:
    cfg = config(JOB_APP)
    runtime = FakeRuntime(FakeClock(), IMAGES)
    runtime.exit_on_start["migrate"] = 0
    async with running(cfg, runtime) as r:
        await r.reaches(migrate=State.COMPLETED, app=State.RUNNING)
        assert r.starts() == ["migrate", "app"]


async def test_a_crash_restarts_with_backoff_and_restart_true_dependents_follow() -> None:
    async with running(config(THREE)) as r:
        await r.reaches(db=State.HEALTHY, app=State.HEALTHY, web=State.RUNNING)
        r.runtime.exit("db", 1)
        await r.reaches(db=State.RESTARTING)
        await r.clock.advance(1.9)
        assert r.starts().count("db") == 1
        assert r.state("app") is State.HEALTHY  # it follows db once db is back, not before
        await r.clock.advance(0.2)
        await r.reaches(db=State.HEALTHY)
        await until(lambda: r.starts().count("app") == 2, "app restarted after db")
        assert r.starts().count("web") == 1  # web does not ask to follow app
        assert r.stack.runners["app"].machine.last_restart_cause is RestartCause.DEPENDENCY


async def test_running_containers_with_the_current_config_are_adopted() -> None:
    cfg = config(THREE)
    runtime = FakeRuntime(FakeClock(), IMAGES)
    for service in cfg.services.values():
        cid = await runtime.create_container(container_spec(cfg, service))
        await runtime.start_container(cid)
    runtime.calls.clear()
    async with running(cfg, runtime) as r:
        await r.reaches(db=State.HEALTHY, app=State.HEALTHY, web=State.RUNNING)
        assert r.runtime.calls == []


async def test_a_container_of_a_service_no_longer_configured_is_removed() -> None:
    runtime = FakeRuntime(FakeClock(), IMAGES)
    old = config("gone: {image: web:1}\n")
    cid = await runtime.create_container(container_spec(old, old.services["gone"]))
    await runtime.start_container(cid)
    async with running(config("db: {image: db:1}\n"), runtime) as r:
        await r.reaches(db=State.RUNNING)
        assert r.runtime.container("gone") is None


async def test_a_reload_recreates_only_what_changed() -> None:
    async with running(config(THREE)) as r:
        await r.reaches(db=State.HEALTHY, app=State.HEALTHY, web=State.RUNNING)
        r.runtime.calls.clear()
        new = config(THREE.replace("app:1", "app:2"))
        await r.stack.apply(new, diff_configs(r.stack.config, new))
        assert r.state("app") in (State.STARTING, State.HEALTHY)
        # web only needs app started and does not follow its restarts: it is left alone.
        assert r.runtime.calls == ["stop app", "remove app", "create app", "start app"]
        container = r.runtime.container("app")
        assert container is not None and container.spec.image == "app:2"


async def test_an_operator_stop_outlives_a_crash_a_backoff_and_a_reload() -> None:
    async with running(config(THREE)) as r:
        await r.reaches(db=State.HEALTHY, app=State.HEALTHY, web=State.RUNNING)
        r.stack.request("app", OperatorCommand.STOP)
        await r.reaches(app=State.STOPPED)
        r.runtime.exit("db", 1)  # app follows db's restarts, but not when stopped by hand
        await r.clock.advance(30)
        await r.reaches(db=State.HEALTHY)
        new = config(THREE.replace("app:1", "app:2"))
        await r.stack.apply(new, diff_configs(r.stack.config, new))
        await r.clock.advance(30)
        assert r.state("app") is State.STOPPED
        assert r.starts().count("app") == 1
        r.stack.request("app", OperatorCommand.START)
        await r.reaches(app=State.HEALTHY)


async def test_an_engine_outage_holds_starts_until_the_engine_is_back_and_resynced() -> None:
    async with running(config(THREE)) as r:
        await r.reaches(db=State.HEALTHY, app=State.HEALTHY, web=State.RUNNING)
        r.runtime.engine_lost()
        await until(lambda: not r.stack.engine.is_open, "the gate closed")
        r.runtime.exit("web", 1)  # the die event still arrives; the start must wait
        await r.reaches(web=State.RESTARTING)
        await r.clock.advance(60)
        assert r.starts().count("web") == 1
        assert r.state("web") is State.RESTARTING
        r.runtime.engine_back()
        await until(lambda: r.stack.engine.is_open, "the gate reopened")
        await until(lambda: r.starts().count("web") == 2, "web started again")
        await r.reaches(web=State.RUNNING, db=State.HEALTHY)
        await settle()


# Two independent services on networks of their own, and a volume.
TWO_NETWORKS = """
db: {image: db:1, networks: [data], volumes: ["pgdata:/var/lib/db"]}
web: {image: web:1, networks: [edge]}
"""


def config_with_networks(services: str) -> StackConfig:
    return parse_config(
        "version: 1\nproject: p\nnetworks: {data: {}, edge: {}}\nvolumes: {pgdata: {}}\n"
        "services:\n" + textwrap.indent(textwrap.dedent(services), "  ")
    )


class SlowNetworks(FakeRuntime):
    """Each network is made only when the test lets it (or fails, if told to)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, IMAGES)
        self.let: dict[str, asyncio.Event] = {"p-data": asyncio.Event(), "p-edge": asyncio.Event()}
        self.refuse_network: set[str] = set()

    async def ensure_network(self, spec: NetworkSpec) -> bool:
        await self.let[spec.name].wait()
        if spec.name in self.refuse_network:
            raise DockerError(f"create network {spec.name}: address pool exhausted")
        return await super().ensure_network(spec)


async def test_a_container_waits_only_for_its_own_networks_and_volumes() -> None:
    runtime = SlowNetworks(FakeClock())
    async with running(config_with_networks(TWO_NETWORKS), runtime) as r:
        runtime.let["p-data"].set()
        await r.reaches(db=State.RUNNING)
        assert "p-pgdata" in runtime.volumes
        await settle()
        assert r.starts() == ["db"]  # web's network is not made yet: nor is its container
        assert r.runtime.container("web") is None
        runtime.let["p-edge"].set()
        await r.reaches(web=State.RUNNING)


class NetworksAsked(FakeRuntime):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, IMAGES)
        self.asked: list[str] = []

    async def ensure_network(self, spec: NetworkSpec) -> bool:
        self.asked.append(spec.name)
        return await super().ensure_network(spec)


async def test_the_network_of_the_longest_chain_is_asked_for_first() -> None:
    # Both networks are first used by the first start level, `edge` first in the config; but
    # `db` heads a chain, and the engine makes one network at a time.
    cfg = parse_config(
        "version: 1\nproject: p\nnetworks: {edge: {}, data: {}}\nservices:\n"
        "  cache: {image: db:1, networks: [edge]}\n"
        "  db: {image: db:1, networks: [data]}\n"
        "  web: {image: web:1, networks: [data], depends_on: [db]}\n"
    )
    runtime = NetworksAsked(FakeClock())
    async with running(cfg, runtime) as r:
        await r.reaches(web=State.RUNNING, cache=State.RUNNING)
    assert runtime.asked == ["p-data", "p-edge"]


async def test_a_network_that_cannot_be_made_stops_what_started_and_fails_the_stack() -> None:
    runtime = SlowNetworks(FakeClock())
    stack = Stack(config_with_networks(TWO_NETWORKS), runtime, FakeProber(runtime), runtime.clock)
    task = asyncio.create_task(stack.run(asyncio.Event(), asyncio.Event()))
    runtime.let["p-data"].set()
    await until(lambda: stack.board.state("db") is State.RUNNING, "db running")
    runtime.refuse_network.add("p-edge")
    runtime.let["p-edge"].set()
    await until(task.done, "the stack gave up")
    with pytest.raises(StackError, match="p-edge: address pool exhausted"):
        task.result()
    db = runtime.container("db")
    assert db is not None and not db.running  # stopped in order, not left behind
    assert runtime.container("web") is None


async def test_a_stop_while_networks_are_being_made_ends_the_stack_without_waiting_for_them() -> (
    None
):
    runtime = SlowNetworks(FakeClock())
    stop = asyncio.Event()
    stack = Stack(config_with_networks(TWO_NETWORKS), runtime, FakeProber(runtime), runtime.clock)
    task = asyncio.create_task(stack.run(stop, asyncio.Event()))
    runtime.let["p-data"].set()
    await until(lambda: stack.board.state("db") is State.RUNNING, "db running")
    stop.set()  # p-edge is never made
    await until(task.done, "the stack stopped")
    task.result()
    assert stack.board.state("db") is State.STOPPED
    assert runtime.container("web") is None


async def test_services_probing_at_one_interval_probe_at_the_same_moments() -> None:
    # One wake-up of the daemon per beat, not one per service (the steady-state CPU cost).
    cfg = config(f"db: {{image: db:1, health: {HEALTH}}}\nweb: {{image: web:1, health: {HEALTH}}}")
    async with running(cfg, failing=("web",)) as r:
        t0 = r.clock.now
        await r.clock.advance(2.5)  # db went steady at t0 + 1; web still fails, probed each 1 s
        r.prober.failing.clear()
        await r.clock.advance(2.5)  # web healthy at t0 + 3, steady after its probe at t0 + 4
        await r.reaches(db=State.HEALTHY, web=State.HEALTHY)
        r.prober.probed_at.clear()
        await r.clock.advance(10)
        at = {s: [t - t0 for n, t in r.prober.probed_at if n == s] for s in ("db", "web")}
        # Alone, web would probe at t0 + 9 and t0 + 14; it joined db's beat (sooner, once).
        assert at["db"] == at["web"] == [6.0, 11.0]


async def test_the_periodic_resync_inspects_only_a_container_not_listed_as_running() -> None:
    async with running(config(THREE)) as r:
        await r.reaches(db=State.HEALTHY, app=State.HEALTHY, web=State.RUNNING)
        web = r.runtime.container("web")
        assert web is not None
        web.running, web.exit_code = False, 1  # died, and the engine's `die` event was lost
        r.runtime.inspected.clear()
        await r.clock.advance(RESYNC_INTERVAL)
        await r.reaches(web=State.RESTARTING)
        assert r.runtime.inspected == [web.id]  # db and app: listed as running, not inspected


async def test_the_head_of_the_longest_chain_starts_before_independent_services() -> None:
    # cache is declared first, but db heads the chain db <- app <- web: db's start goes first
    # and cache's waits for it (the engine starts a few at a time on a small host).
    cfg = config("cache: {image: web:1}\n" + THREE)
    async with running(cfg) as r:
        await r.reaches(db=State.STARTING, cache=State.RUNNING)
        assert r.starts()[:2] == ["db", "cache"]
