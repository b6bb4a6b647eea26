"""The whole stack: bring it up in dependency order, watch it, stop it in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re

import structlog

from supervisor.clock import SYSTEM_CLOCK, Clock
from supervisor.config import StackConfig
from supervisor.config_diff import ConfigDiff
from supervisor.container_plan import Pin, pin_after_replace, pin_from_labels, runner_image
from supervisor.dependency_restarts import DependencyRestarts
from supervisor.docker_api import (
    ContainerEvent,
    ContainerInfo,
    DockerError,
    DockerRuntime,
    StreamLost,
    StreamReset,
)
from supervisor.engine_gate import EngineGate
from supervisor.engine_turns import EngineTurns, ServiceTurns, chain_lengths
from supervisor.graph import DependencyGraph

# Re-exported: it lived here before `supervisor.model`.
from supervisor.model import OperatorCommand as OperatorCommand  # noqa: PLC0414 - re-export
from supervisor.probe_beat import ProbeBeat
from supervisor.runner import ServiceRunner
from supervisor.runtime import ProbeRunner, StackRuntime
from supervisor.service import (
    QUIESCENT,
    RestartRequested,
    ShutdownBegan,
    StartRequested,
    State,
    StopRequested,
)
from supervisor.spec import (
    ContainerSpec,
    ImageChoice,
    NetworkSpec,
    VolumeSpec,
    in_order_of_first_use,
    network_name,
    volume_name,
)
from supervisor.state_board import StateBoard
from supervisor.status import Observers, ServiceStatus

log = structlog.get_logger(__name__)

# A safety net under the event stream: how often every container is re-inspected.
RESYNC_INTERVAL = 30.0
# A container whose service left the config has no stop timeout of its own any more.
DEFAULT_ORPHAN_STOP_TIMEOUT = 10.0
# A runner busy with a long stop must not hold every other start after a reconnect forever.
CATCH_UP_TIMEOUT = 30.0
# How long a reload waits for the services it (re)created to come up before it reports.
APPLY_START_WAIT = 120.0


class StackError(Exception):
    """The stack could not be brought up (networks, volumes)."""


class Stack:
    """Runs every service of one config; `run` returns once the stack has been stopped."""

    def __init__(
        self,
        config: StackConfig,
        runtime: StackRuntime,
        prober: ProbeRunner,
        clock: Clock = SYSTEM_CLOCK,
        observers: Observers | None = None,
    ) -> None:
        self.config = config
        self.graph = config.graph()
        self.board = StateBoard()
        self._runtime = runtime
        self._prober = prober
        self._clock = clock
        self.engine = EngineGate()
        self._probe_beat = ProbeBeat()
        self._turns = EngineTurns()
        self._chains = chain_lengths(self.graph)
        self.observers = observers or Observers()
        # service -> (pinned image, the reference it was pinned for): rolled back there; kept
        # until an update succeeds.
        self.pins: dict[str, Pin] = {}
        self.runners = {name: self._runner(config, name) for name in config.services}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self._events_connected = asyncio.Event()
        self._stopping = False
        # Docker name of a network or volume -> done once made (None) or given up (why).
        self._made: dict[str, asyncio.Future[str | None]] = {}
        self.observers.add(
            DependencyRestarts(
                lambda: self.config.services,
                lambda: self.graph,
                self.board.state,
                lambda name, event: self.runners[name].post(event),
            )
        )

    def _runner(
        self, config: StackConfig, name: str, image: ImageChoice | None = None
    ) -> ServiceRunner:
        image = runner_image(config.services[name].image, image, self.pins.get(name))
        return ServiceRunner(
            config,
            config.services[name],
            self._runtime,
            self._prober,
            self.board,
            self._clock,
            self.observers,
            self.engine,
            image,
            self._resources_for,
            beat=self._probe_beat,
            turns=ServiceTurns(self._turns, lambda: self._chains.get(name, 0)),
        )

    def _launch(self, runner: ServiceRunner) -> None:
        assert self._group is not None, "the stack is not running"
        self._tasks[runner.name] = self._group.create_task(
            runner.run(), name=f"runner-{runner.name}"
        )

    async def run(self, stop: asyncio.Event, hurry: asyncio.Event) -> None:
        """Start everything, supervise until `stop` is set, then stop in reverse order.

        Raises StackError if a network or volume cannot be made (after stopping whatever had
        started meanwhile)."""
        # Networks and volumes are made beside everything else: the engine makes them one at a
        # time, and each container waits only for its own (`_resources_for`).
        preparing = asyncio.ensure_future(self._prepare(self.config))
        try:
            await self._survey()
        except BaseException:
            preparing.cancel()
            raise
        async with asyncio.TaskGroup() as group:
            self._group = group
            watcher = group.create_task(self._watch_events(), name="docker-events")
            # Subscribe before anything starts, so a job that exits at once is still seen.
            await self._events_connected.wait()
            # Longest chain first: the first to ask for a turn at the engine gets it.
            for name in sorted(self.runners, key=lambda n: -self._chains.get(n, 0)):
                self._launch(self.runners[name])
            resync = group.create_task(self._resync_periodically(), name="resync")
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({stopping, preparing}, return_when=asyncio.FIRST_COMPLETED)
            if not preparing.done() or preparing.exception() is None:
                await stopping
            stopping.cancel()
            preparing.cancel()  # a stop before every network was made: no need for the rest
            await self._shutdown(hurry)
            for task in (watcher, resync, *self._tasks.values()):
                task.cancel()
        self._group = None
        failure = preparing.exception() if preparing.done() and not preparing.cancelled() else None
        if failure is not None:
            raise failure

    def settled(self) -> bool:
        """No service is on its way up any more (the first start is over, one way or another)."""
        return all(s.state not in (State.PENDING, State.STARTING) for s in self.statuses())

    async def apply(self, new: StackConfig, diff: ConfigDiff) -> None:
        """Make the running stack match `new`, touching only the services `diff` names."""
        await self._prepare(new)
        leaving = set(diff.removed) | set(diff.recreated)
        was = {name: self.board.state(name) for name in leaving}
        # An operator's stop outlives a reload that recreates the service.
        kept_stopped = {n for n in diff.recreated if self.runners[n].machine.operator_stopped}
        await self._stop_services(leaving, self.graph)
        for name in (*diff.removed, *diff.recreated):
            runner = self.runners.pop(name)
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
            if name in diff.removed:
                container_id = runner.machine.container_id
                if container_id is None:
                    # Never started by this runner (stopped by the operator before a recreate):
                    # the container of the old config may still be there.
                    found = await self._runtime.inspect_container(runner.spec.name)
                    container_id = found.id if found is not None else None
                if container_id:
                    await self._runtime.remove_container(container_id)
                log.info("service removed", service=name)
        self.config, self.graph = new, new.graph()
        self._chains = chain_lengths(self.graph)
        for name in diff.updated:
            self.runners[name].update_config(new)
        for name in new.services:
            if name in diff.added or name in diff.recreated:
                runner = self.runners[name] = self._runner(new, name)
                if name in kept_stopped:
                    runner.post(StopRequested(by_operator=True))  # handled before anything else
                self._launch(runner)
                if name in was:
                    # Lets `restart: true` dependents follow the recreated service.
                    self.observers.service_changed(runner.status(), was[name])
        # Keep config order for status listings.
        self.runners = {name: self.runners[name] for name in new.services}
        # Applied means the new containers are up (or have failed): not merely scheduled.
        starting = [n for n in new.services if n in diff.added or n in diff.recreated]
        try:
            async with asyncio.timeout(APPLY_START_WAIT):
                await self.board.wait_for(lambda: None if self._pending(starting) else True)
        except TimeoutError:
            log.warning(
                "reload applied; services still waiting to start", services=self._pending(starting)
            )

    async def stop_services(self, names: set[str]) -> None:
        """Stop these services (dependents first) and wait until they are down."""
        await self._stop_services(names, self.graph)

    async def replace_service(self, name: str, image: ImageChoice) -> None:
        """Recreate one service's container on an exact image ID (update, rollback); a job
        runs again. Its dependents are left alone: the caller decides who follows."""
        if self._stopping:
            raise StackError(f"service {name}: not recreated, the stack is stopping")
        await self._stop_services({name}, self.graph)
        old = self.runners[name]
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        info = await self._runtime.inspect_container(old.spec.name)
        if info is not None:
            # One container per service, always: the old one goes before the new one is made.
            await self._runtime.remove_container(info.id)
        pin = pin_after_replace(image, self.config.services[name].image)
        if pin is not None:
            self.pins[name] = pin
        else:
            self.pins.pop(name, None)
        runner = self.runners[name] = self._runner(self.config, name, image)
        self._launch(runner)

    def _pending(self, names: list[str]) -> list[str]:
        return [n for n in names if self.board.state(n) is State.PENDING]

    async def _prepare(self, config: StackConfig) -> None:
        """Make the config's networks and volumes, in parallel; StackError if one fails."""
        loop = asyncio.get_running_loop()

        def made(name: str, failure: str | None = None) -> None:
            if not self._made[name].done():
                self._made[name].set_result(failure)

        async def network(spec: NetworkSpec) -> None:
            async with self._turns.turn(priority.get(spec.name, 0)):
                if await self._runtime.ensure_network(spec):
                    log.info("network created", network=spec.name)
            made(spec.name)

        async def volume(spec: VolumeSpec) -> None:
            if await self._runtime.ensure_volume(spec):
                log.info("volume created", volume=spec.name)
            made(spec.name)

        networks, volumes = in_order_of_first_use(config, config.graph().levels())
        # A network's priority: that of the longest chain among the services that join it.
        priority: dict[str, int] = {}
        for name, service in config.services.items():
            for key in service.networks:
                net_name = network_name(config, key)
                priority[net_name] = max(priority.get(net_name, 0), self._chains.get(name, 0))
        names = (*(n.name for n in networks), *(v.name for v in volumes))
        for name in names:
            known = self._made.get(name)
            if known is None or (known.done() and known.result() is not None):
                self._made[name] = loop.create_future()  # none yet, or given up on before
        failure = "the stack stopped before it was made"
        try:
            async with asyncio.TaskGroup() as group:
                # The first to ask goes at once: the one the longest chain needs must ask first.
                for net in sorted(networks, key=lambda n: -priority.get(n.name, 0)):
                    group.create_task(network(net))
                for vol in volumes:
                    group.create_task(volume(vol))
        except* DockerError as errors:
            failure = "; ".join(str(e) for e in errors.exceptions)
            raise StackError(failure) from errors
        finally:
            for name in names:  # whoever still waits for one learns it will not come
                made(name, failure)

    async def _resources_for(self, spec: ContainerSpec) -> None:
        """Wait until the networks and volumes `spec` uses exist; DockerError if one cannot
        be made (the stack then stops, see `run`)."""
        for name in (*spec.networks, *(m.source for m in spec.volume_mounts)):
            if name in self._made:
                failure = await asyncio.shield(self._made[name])
                if failure is not None:
                    raise DockerError(f"{name} was not made: {failure}")

    async def _survey(self) -> None:
        """Look at what the project already has running before starting anything (adoption)."""
        try:
            existing = await self._runtime.list_project_containers(self.config.project)
        except DockerError as exc:
            raise StackError(str(exc)) from exc
        for info in existing:
            if info.service in self.runners:
                pin = pin_from_labels(info.labels)
                if pin is not None:
                    self.pins[info.service] = pin
                    self.runners[info.service] = self._runner(self.config, info.service)
                continue
            log.info("removing container of a service no longer configured", service=info.service)
            try:
                if info.running:
                    await self._runtime.stop_container(info.id, DEFAULT_ORPHAN_STOP_TIMEOUT)
                await self._runtime.remove_container(info.id)
            except DockerError as exc:
                log.error("could not remove container", service=info.service, error=str(exc))
        by_service = {c.service: c for c in existing}
        for name, runner in self.runners.items():
            # Nothing to inspect before its first start: the survey has just looked.
            runner.container_absent = name not in by_service
            deps = self.config.services[name].depends_on
            if runner.machine.is_job and completed_since(
                by_service.get(name), [by_service.get(d) for d in deps]
            ):
                runner.adopt_completed_job = True

    async def _watch_events(self) -> None:
        async for event in self._runtime.events(self.config.project):
            if isinstance(event, StreamLost):
                self.engine.lost(event.error)
                self.observers.engine_link(False, event.error)
            elif isinstance(event, StreamReset):
                self._events_connected.set()
                self.observers.engine_link(True, "event stream connected")
                if event.reconnected:
                    log.info("docker event stream reconnected; re-inspecting containers")
                    await self._catch_up()
            elif isinstance(event, ContainerEvent) and event.service in self.runners:
                self.runners[event.service].docker_event(
                    event.action, event.container_id, event.attributes, event.time_ns
                )

    async def _catch_up(self) -> None:
        """After a gap in the event stream: every runner re-inspects its container before
        anything may start again, so dependencies are judged on what really runs."""
        self.engine.lost("event stream was interrupted")
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT):
                await asyncio.gather(*(runner.recheck() for runner in self.runners.values()))
        except TimeoutError:
            log.warning("re-inspection after reconnect is slow; resuming starts anyway")
        self.engine.reopen()

    async def _resync_periodically(self) -> None:
        while True:
            await self._clock.sleep(RESYNC_INTERVAL)
            await self._resync()

    async def _resync(self) -> None:
        """A safety net for events the stream may have missed: a runner whose container is
        not running re-inspects it. One listing instead of an inspect per service: with 50
        services those were a tenth of the daemon's steady-state CPU."""
        try:
            running = await self._runtime.running_container_ids(self.config.project)
        except DockerError:
            running = set()  # cannot tell: each runner asks (and notices an absent engine)
        for runner in self.runners.values():
            if runner.machine.container_id not in running:
                runner.resync()

    async def _shutdown(self, hurry: asyncio.Event) -> None:
        """Stop each service only after everything that depends on it has stopped."""
        log.info("stopping stack", services=len(self.runners))
        self._stopping = True
        self.observers.stack_stopping()
        for runner in self.runners.values():
            runner.post(ShutdownBegan())

        async def kill_on_hurry() -> None:
            await hurry.wait()
            log.warning("second stop signal: killing what is left without waiting")
            for runner in self.runners.values():
                if runner.machine.state not in QUIESCENT:
                    await runner.kill()

        async with asyncio.TaskGroup() as group:
            killer = group.create_task(kill_on_hurry())
            await self._stop_services(set(self.runners), self.graph)
            killer.cancel()
        log.info("stack stopped")

    async def _stop_services(self, names: set[str], graph: DependencyGraph) -> None:
        """Stop `names`, each only after those of its dependents that are stopping too."""
        stopped = {name: asyncio.Event() for name in names}

        async def stop_one(name: str) -> None:
            for dependent in graph.dependents_of(name) & names:
                await stopped[dependent].wait()
            self.runners[name].post(StopRequested())
            await self.board.wait_for(lambda: True if self.board.state(name) in QUIESCENT else None)
            stopped[name].set()

        await asyncio.gather(*(stop_one(name) for name in names))

    def states(self) -> dict[str, State]:
        return self.board.snapshot()

    def statuses(self) -> list[ServiceStatus]:
        """Every service, in config order."""
        return [runner.status() for runner in self.runners.values()]

    def target_reached(self) -> bool:
        """Long-running services healthy (or running, without a probe), jobs completed."""
        return all(s.up_to_target for s in self.statuses())

    def request(self, service: str, command: OperatorCommand) -> None:
        """An operator's start, stop or restart of one service. KeyError for an unknown name."""
        runner = self.runners[service]
        match command:
            case OperatorCommand.STOP:
                runner.post(StopRequested(by_operator=True))
            case OperatorCommand.START:
                runner.post(StartRequested())
            case OperatorCommand.RESTART:
                runner.post(RestartRequested("restart requested by operator"))


async def remove_stack(
    config: StackConfig, runtime: DockerRuntime, *, volumes: bool = False
) -> None:
    """`down`: stop (reverse order) and remove the project's containers and networks.

    Named volumes hold the databases and the PKI: they go only when asked for explicitly.
    """
    containers = {c.service: c for c in await runtime.list_project_containers(config.project)}
    for level in config.graph().reverse_levels():
        await asyncio.gather(
            *(
                runtime.stop_container(containers[name].id, config.services[name].stop.timeout)
                for name in level
                if name in containers and containers[name].running
            )
        )
    for info in containers.values():
        await runtime.remove_container(info.id)
        log.info("container removed", service=info.service, container=info.id[:12])
    for net in await runtime.list_project_networks(config.project):
        with contextlib.suppress(DockerError):
            await runtime.remove_network(net)
    if volumes:
        for name in config.volumes:
            await runtime.remove_volume(volume_name(config, name))
            log.warning("volume removed", volume=volume_name(config, name))


def completed_since(job: ContainerInfo | None, dependencies: list[ContainerInfo | None]) -> bool:
    """Whether a job's container finished with 0 after each of its dependencies' containers
    was created: then a restarted daemon adopts it as completed instead of running it again.

    A job runs once per creation of what it depends on (a migration, a copy into a volume), not
    once per daemon start; a dependency recreated since (config change, removed by hand) makes
    it run again. Times it cannot read count as "not proven": the job runs.
    """
    if job is None or job.running or job.exit_code != 0:
        return False
    finished = _instant(job.finished_at)
    if finished is None:
        return False
    for dep in dependencies:
        created = None if dep is None else _instant(dep.created)
        if created is None or created > finished:
            return False
    return True


def _instant(stamp: str) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, `Z`) as epoch seconds; None if unreadable."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    if match is None or stamp.startswith("0001-"):
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    whole = dt.datetime.fromisoformat(match.group(1) + zone).timestamp()
    return whole + float(f"0.{match.group(2) or 0}")
