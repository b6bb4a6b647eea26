"""Runs one service: feeds its state machine events and performs the actions it returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

import structlog

from supervisor.clock import Clock, Timer
from supervisor.config import ExecProbe, PullPolicy, ServiceConfig, StackConfig
from supervisor.container_plan import (
    Adopt,
    KeepCompleted,
    Nothing,
    Plan,
    Recreate,
    Start,
    known_container,
    plan_ahead,
    plan_start,
)
from supervisor.docker_api import ContainerInfo, DockerError, DockerUnavailable, ImageNotFound
from supervisor.engine_gate import EngineGate
from supervisor.engine_turns import ServiceTurns
from supervisor.probe_beat import ProbeBeat
from supervisor.probes import ProbeResult, ProbeTarget
from supervisor.runner_inputs import (
    DockerNoticed,
    DropAhead,
    ProbeDone,
    Recheck,
    Retry,
    RunnerInput,
)
from supervisor.runtime import ContainerRuntime, ProbeRunner
from supervisor.service import (
    CONTAINER_UP,
    Action,
    BackoffElapsed,
    CancelBackoff,
    ContainerExited,
    ContainerStarted,
    ContainerStopped,
    Event,
    JobFoundCompleted,
    ProbeFailed,
    ProbeSucceeded,
    ScheduleBackoff,
    ServiceMachine,
    StartContainer,
    StartFailed,
    State,
    StopContainer,
    WaitForDependencies,
    dependencies_verdict,
)
from supervisor.shutdown_stop import DieWatch, stop_at_shutdown
from supervisor.spec import ContainerSpec, ImageChoice, container_spec
from supervisor.state_board import StateBoard
from supervisor.status import ServiceStatus, StackObserver

log = structlog.get_logger(__name__)


class ServiceRunner:
    """Owns one service's machine, its probe loop and its backoff timer."""

    def __init__(
        self,
        stack: StackConfig,
        service: ServiceConfig,
        runtime: ContainerRuntime,
        prober: ProbeRunner,
        board: StateBoard,
        clock: Clock,
        observer: StackObserver,
        gate: EngineGate,
        image: ImageChoice | None = None,
        resources: Callable[[ContainerSpec], Awaitable[None]] | None = None,
        beat: ProbeBeat | None = None,
        turns: ServiceTurns | None = None,
    ) -> None:
        self.stack = stack
        self.service = service
        # An exact image ID (update, rollback pin) instead of what the reference resolves to.
        self.image = image
        self.spec = container_spec(stack, service, image)
        self.machine = ServiceMachine(service, since=clock.monotonic())
        self.last_probe: ProbeResult | None = None
        self._runtime = runtime
        self._prober = prober
        self._board = board
        self._clock = clock
        self._observer = observer
        self._gate = gate
        # Waits until the networks and volumes a container uses exist (made at start-up).
        self._resources = resources
        # Shared by the stack's runners: their steady probes fall together (see probe_beat).
        self._beat = beat or ProbeBeat()
        # The service's turns at the engine (see engine_turns); none: no waiting.
        self._turns = turns
        self._engine_wait: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[RunnerInput] = asyncio.Queue()
        self._address: str | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._deps_task: asyncio.Task[None] | None = None
        self._backoff: Timer | None = None
        # Set by the stack at start-up when this job's dependents are already running.
        self.adopt_completed_job = False
        # Set by the stack's survey at start-up when the project has no container for this
        # service: the first create needs no inspect first. Cleared once used.
        self.container_absent = False
        self._ahead: asyncio.Task[None] | None = None
        self._ahead_engaged = False  # past its wait: an engine call may be under way
        # (container id, config hash) of the container this runner last made or started.
        self._known: tuple[str, str] | None = None
        self._started_ns = 0
        self._oom_seen: str | None = None
        # (container id, stop issued at ns, future) while a shutdown stop waits on the `die`.
        self._die_watch = DieWatch()  # what a shutdown stop waits on
        self._log = log.bind(service=service.name)
        board.publish(service.name, self.machine.state)

    @property
    def name(self) -> str:
        return self.service.name

    def status(self) -> ServiceStatus:
        """A snapshot for the API, metrics and systemd."""
        m = self.machine
        return ServiceStatus(
            name=self.name,
            type=self.service.type,
            image=self.service.image,
            state=m.state,
            reason=m.reason,
            since=self._clock.wall() - (self._clock.monotonic() - m.since),
            container_id=m.container_id,
            restarts=m.restarts,
            last_exit_code=m.last_exit_code,
            last_probe=self.last_probe,
            has_probe=self.service.health is not None and not m.is_job,
            blocked_by=m.blocked_by,
            operator_stopped=m.operator_stopped,
            environment_keys=tuple(sorted(self.service.environment)),
        )

    def update_config(self, stack: StackConfig) -> None:
        """Take new supervision settings (probe, restart policy, dependencies) in place.

        Only for a change that leaves the container as it is (same container hash).
        """
        self.stack, self.service = stack, stack.services[self.name]
        self.spec = container_spec(stack, self.service, self.image)
        self.machine.service = self.service
        self._log.info("supervision settings updated")
        if self._probe_task is not None:
            self._cancel_probes()
        if (
            self.machine.container_up
            and self.service.health is not None
            and not self.machine.is_job
        ):
            self._ensure_probing()

    def post(self, event: RunnerInput) -> None:
        """Hand the runner an event; safe from any task on the loop."""
        self._inbox.put_nowait(event)

    def docker_event(
        self,
        action: str,
        container_id: str,
        attributes: Mapping[str, str] | None = None,
        at_ns: int = 0,
    ) -> None:
        """Route an engine event about this service's container."""
        if action == "die":
            self._die_watch.died(container_id, at_ns)
            code = (attributes or {}).get("exitCode", "")
            exit_code = int(code) if code.lstrip("-").isdigit() else None
            self.post(DockerNoticed(container_id, exit_code=exit_code, at_ns=at_ns))
        elif action == "destroy":
            self.post(DockerNoticed(container_id))
        elif action == "oom":
            self._oom_seen = container_id  # the `die` that follows is an OOM kill

    def resync(self) -> None:
        """The event stream was interrupted: check the container's real state."""
        if self.machine.container_id:
            self.post(DockerNoticed(self.machine.container_id))

    async def run(self) -> None:
        """Process events until cancelled."""
        if self.service.depends_on and self.machine.state is State.PENDING:
            self._ahead = asyncio.create_task(self._create_ahead(), name=f"create-{self.name}")
        self._watch_dependencies()
        try:
            while True:
                item = await self._inbox.get()
                try:
                    await self._step(item)
                except Exception:
                    # One bad step must not take the whole daemon down; the periodic resync
                    # and the next event give the machine another look.
                    self._log.exception("runner step failed", item=type(item).__name__)
        finally:
            self._cancel_probes()
            if self._deps_task is not None:
                self._deps_task.cancel()
            if self._backoff is not None:
                self._backoff.cancel()
            if self._ahead is not None:
                self._ahead.cancel()
            if self._engine_wait is not None:
                self._engine_wait.cancel()

    async def kill(self) -> None:
        """Shutdown in a hurry: SIGKILL the container, whatever it is doing."""
        if self.machine.container_id and self.machine.state not in (State.STOPPED,):
            with contextlib.suppress(DockerError):
                await self._runtime.kill_container(self.machine.container_id)

    # -- the loop -------------------------------------------------------------------------

    async def _step(self, item: RunnerInput) -> None:
        event: Event | None
        if isinstance(item, DockerNoticed):
            event = await self._recheck(item)
        elif isinstance(item, ProbeDone):
            event = self._probe_event(item)
        elif isinstance(item, Retry):
            if self.machine.state in (State.PENDING, State.RESTARTING):
                await self._perform(item.action)
            return
        elif isinstance(item, DropAhead):
            await self._drop_ahead()
            return
        elif isinstance(item, Recheck):
            try:
                if self.machine.container_id:
                    found = await self._recheck(DockerNoticed(self.machine.container_id))
                    if found is not None:
                        await self._apply(found)
            finally:
                if not item.done.done():
                    item.done.set_result(None)
            return
        else:
            event = item
        if event is not None:
            await self._apply(event)

    async def _apply(self, event: Event) -> None:
        if isinstance(event, ContainerExited) and self.machine.container_up:
            self._observer.container_exited(
                self.name, event.exit_code, event.oom_killed, event.removed
            )
        actions = self.machine.handle(event, self._clock.monotonic())
        for old, new, reason in self.machine.take_transitions():
            self._state_changed(old, new, reason)
        for action in actions:
            await self._perform(action)

    def _state_changed(self, old: State, new: State, reason: str) -> None:
        m = self.machine
        level = "warning" if new in (State.BLOCKED, State.UNHEALTHY) else "info"
        if new is State.FAILED:
            level = "error"
        getattr(self._log, level)("state changed", old=old.value, new=new.value, reason=reason)
        self._board.publish(self.name, new)
        self._observer.service_changed(replace(self.status(), state=new, reason=reason), old)
        if new is State.RESTARTING and old is not State.RESTARTING and m.last_restart_cause:
            self._observer.restart_issued(self.name, m.last_restart_cause)
        if new is State.BLOCKED and self._ahead is not None:
            self.post(DropAhead())
        if new in CONTAINER_UP and self.service.health is not None and not m.is_job:
            self._ensure_probing()
        elif new not in CONTAINER_UP:
            self._cancel_probes()

    async def _perform(self, action: Action) -> None:
        match action:
            case StartContainer() if not self._gate.is_open:
                # The engine is away or the stack has not caught up with it yet.
                self._retry_when_engine_back(WaitForDependencies())
            case StartContainer():
                began = self._clock.monotonic()
                try:
                    async with self._engine_turn():
                        container_id, completed = await self._start()
                except DockerUnavailable as exc:
                    # Not the service's fault. Once the engine is back and every service has
                    # been re-inspected, judge the dependencies again before starting.
                    self._log.warning("engine unavailable; start deferred", error=str(exc))
                    self._gate.lost(str(exc))
                    self._retry_when_engine_back(WaitForDependencies())
                except DockerError as exc:
                    await self._apply(StartFailed(str(exc)))
                else:
                    if completed:
                        await self._apply(JobFoundCompleted(container_id))
                    else:
                        self._observer.container_started(self.name, self._clock.monotonic() - began)
                        await self._apply(ContainerStarted(container_id))
            case StopContainer(reason):
                if self.machine.container_id:
                    self._log.info(
                        "stopping container", reason=reason, signal=self.service.stop.signal
                    )
                    await self._stop_container(self.machine.container_id)
                self._cancel_probes()
                await self._apply(ContainerStopped())
            case ScheduleBackoff(delay):
                self._backoff = self._clock.call_later(delay, lambda: self.post(BackoffElapsed()))
            case CancelBackoff():
                if self._backoff is not None:
                    self._backoff.cancel()
                    self._backoff = None
            case WaitForDependencies():
                ready = self._dependencies_verdict()
                if ready is not None and (self._deps_task is None or self._deps_task.done()):
                    # Already decided (an immediate restart, mostly): act now rather than
                    # through a task and the inbox, behind whatever else the loop has queued.
                    await self._apply(ready)
                else:
                    self._watch_dependencies()

    # -- containers -----------------------------------------------------------------------

    async def _create_ahead(self) -> None:
        """While dependencies are not yet met, have the container created (and its image
        present), so that meeting them costs only a start."""
        # Not before the dependencies are on their way up: at a cold start the engine is busiest
        # with the first wave, and creating everything at once would slow that wave down.
        await self._board.wait_for(
            lambda: (
                None
                if any(self._board.state(d) is State.PENDING for d in self.service.depends_on)
                else True
            )
        )
        if self.machine.state is not State.PENDING:
            return  # blocked or stopped meanwhile: nothing to prepare for
        self._ahead_engaged = True
        spec = self.spec
        plan = plan_ahead(spec.config_hash, await self._inspect_unless_absent(spec.name))
        if isinstance(plan, Recreate):
            await self._runtime.remove_container(plan.container_id)
        if not isinstance(plan, Nothing):
            await self._create()

    async def _drop_ahead(self) -> None:
        """A service blocked before its first start keeps no container: what `down` or an
        operator sees matches what ran, whichever way the race with the blocking went."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        if not self._ahead_engaged:
            ahead.cancel()  # still waiting for the dependencies: nothing made yet
            return
        with contextlib.suppress(DockerError):
            await ahead  # a create under way finishes first, or it would be left behind
        known, self._known = self._known, None
        if known is not None and self.machine.state is State.BLOCKED:
            with contextlib.suppress(DockerError):
                await self._runtime.remove_container(known[0])
                self._log.info("container made ahead removed", container=known[0][:12])

    async def _stop_container(self, container_id: str) -> None:
        """Stop the container. While the stack shuts down, by its stop signal and its `die`
        event (see `shutdown_stop`); otherwise by the engine's stop call, which returns once
        the engine has also cleaned up (network, mounts): a restart or replacement must not
        race that clean-up."""
        if self.machine.shutting_down and self.machine.state is State.STOPPING:
            await stop_at_shutdown(
                self._runtime,
                self._clock,
                self._die_watch,
                container_id,
                self.service.stop,
                self._log,
            )
        else:
            await self._runtime.stop_container(container_id, self.service.stop.timeout)

    async def _start(self) -> tuple[str, bool]:
        """Adopt, start or (re)create the container so it runs with the current config.

        Returns the container id and whether it is a job adopted as already completed.
        """
        spec = self.spec
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            with contextlib.suppress(DockerError):
                await ahead  # any problem shows again below, where it counts
        known, self._known = self._known, None
        known_id = known_container(spec.config_hash, known)
        if known_id is not None:
            # A container this runner made or ran with the current config (made ahead, or
            # restarting): just start it, with no look-up first.
            try:
                await self._start_known(known_id)
            except DockerUnavailable:
                raise
            except DockerError as exc:
                # Gone or changed out of band since: take the long way below.
                self._log.warning("known container cannot start", error=str(exc))
            else:
                return known_id, False
        info = await self._inspect_unless_absent(spec.name)
        plan = plan_start(spec.config_hash, info, adopt_completed_job=self.adopt_completed_job)
        if isinstance(plan, Start):
            try:
                await self._start_known(plan.container_id)
            except DockerUnavailable:
                raise
            except DockerError as exc:
                self._log.warning(
                    "container cannot start; replacing it",
                    container=plan.container_id[:12],
                    error=str(exc),
                )
                plan = plan_start(spec.config_hash, info, refused=True)
            else:
                return plan.container_id, False
        return await self._carry_out(plan)

    async def _carry_out(self, plan: Plan) -> tuple[str, bool]:
        """Perform a start plan other than a plain start: (container id, completed job)."""
        match plan:
            case KeepCompleted(container_id):
                # Its dependents are running from before the daemon restarted: running the job
                # again would only repeat work they already rely on.
                self.adopt_completed_job = False
                self._log.info("completed job adopted", container=container_id[:12])
                return container_id, True
            case Adopt(container_id):
                self._log.info("container adopted", container=container_id[:12])
                self._known = (container_id, self.spec.config_hash)
                started = await self._runtime.inspect_container(container_id)
                self._address = started.address if started is not None else None
                return container_id, False
            case Recreate(container_id, stop_first, why):
                self._log.info(f"recreating container: {why}", container=container_id[:12])
                if stop_first:
                    await self._runtime.stop_container(container_id, self.service.stop.timeout)
                await self._runtime.remove_container(container_id)
        container_id = await self._create()
        await self._start_known(container_id)
        return container_id, False

    def _engine_turn(self) -> AbstractAsyncContextManager[None]:
        return self._turns.turn() if self._turns is not None else contextlib.nullcontext()

    async def _inspect_unless_absent(self, name: str) -> ContainerInfo | None:
        if self.container_absent:
            self.container_absent = False
            return None
        return await self._runtime.inspect_container(name)

    async def _create(self) -> str:
        await self._ensure_image()
        if self._resources is not None:
            await self._resources(self.spec)
        # In turn: a create made ahead must not slow the start of a service it waits for.
        async with self._engine_turn():
            container_id = await self._runtime.create_container(self.spec)
        self._known = (container_id, self.spec.config_hash)
        self._log.info("container created", container=container_id[:12], image=self.spec.image)
        return container_id

    async def _start_known(self, container_id: str) -> None:
        # Engine events about this container from before this instant are about an earlier run.
        self._started_ns = self._clock.wall_ns()
        await self._runtime.start_container(container_id)
        self._known = (container_id, self.spec.config_hash)
        self._log.info("container started", container=container_id[:12])
        started = await self._runtime.inspect_container(container_id)
        self._address = started.address if started is not None else None

    async def _ensure_image(self) -> None:
        image, policy = self.service.image, self.service.pull
        if self.image is not None:
            image, policy = self.image.image_id, PullPolicy.NEVER  # an ID is never pulled
        if policy is PullPolicy.ALWAYS:
            await self._runtime.pull_image(image)
        elif not await self._runtime.image_present(image):
            if policy is PullPolicy.NEVER:
                raise ImageNotFound(
                    f"image {image}: not present locally and pull policy is 'never'"
                )
            await self._runtime.pull_image(image)

    async def _recheck(self, noticed: DockerNoticed) -> Event | None:
        """Turn an engine event into a machine event only if the container really is down."""
        if noticed.container_id != self.machine.container_id or not self.machine.container_up:
            return None
        if noticed.exit_code is not None and noticed.at_ns > self._started_ns:
            # A `die` of the current run carries its exit code: no need to ask the engine.
            oom, self._oom_seen = self._oom_seen == noticed.container_id, None
            return ContainerExited(noticed.exit_code, oom_killed=oom)
        try:
            info = await self._runtime.inspect_container(noticed.container_id)
        except DockerError as exc:
            # The engine is away; the stream's reconnect triggers another recheck.
            self._log.warning("cannot inspect container", error=str(exc))
            if isinstance(exc, DockerUnavailable):
                self._gate.lost(str(exc))
            return None
        if info is not None and info.running:
            return None  # a stale event about a run that has since been restarted
        if info is None:
            return ContainerExited(None, removed=True)
        return ContainerExited(info.exit_code, oom_killed=info.oom_killed)

    def _retry_when_engine_back(self, action: Action) -> None:
        async def retry() -> None:
            await self._gate.wait_open()
            self.post(Retry(action))

        if self._engine_wait is None or self._engine_wait.done():
            self._engine_wait = asyncio.create_task(retry(), name=f"engine-wait-{self.name}")

    async def recheck(self) -> None:
        """Re-inspect the container; returns once the machine has taken the answer in."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.post(Recheck(done))
        await done

    # -- probes ---------------------------------------------------------------------------

    def _probe_event(self, done: ProbeDone) -> Event | None:
        if done.container_id != self.machine.container_id:
            return None
        self.last_probe = done.result
        self._observer.probe_done(self.name, done.result)
        if done.result.ok:
            return ProbeSucceeded(done.result.detail)
        if self.machine.state is not State.STARTING:
            self._log.warning("probe failed", detail=done.result.detail)
        return ProbeFailed(done.result.detail)

    def _ensure_probing(self) -> None:
        if self._probe_task is None or self._probe_task.done():
            assert self.machine.container_id is not None
            self._probe_task = asyncio.create_task(
                self._probe_loop(self.machine.container_id), name=f"probe-{self.name}"
            )

    def _cancel_probes(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            self._probe_task = None

    async def _probe_loop(self, container_id: str) -> None:
        health = self.service.health
        assert health is not None
        target = ProbeTarget(container_id, self._address)
        by_exec = isinstance(health.probe, ExecProbe)
        while True:
            began = self._clock.monotonic()
            # Exec probes at the start pace keep the engine busy (see engine_turns); at the
            # steady pace a wait would only stretch the time to detect a failure.
            if by_exec and self._turns is not None and self.machine.state is State.STARTING:
                await self._turns.behind()
            result = await self._prober.probe(health.probe, target, health.timeout)
            self.post(ProbeDone(container_id, result))
            # Probe fast until the first success, then at the steady interval, on the beat
            # the stack's services share. At a fixed rate: a probe that runs into its timeout
            # must not stretch the period, or detection would take retries x (interval +
            # timeout).
            if self.machine.state is State.STARTING:
                due = began + health.start_interval
            else:
                due = self._beat.next_probe(health.interval, began, self.name)
            await self._clock.sleep(max(0.0, due - self._clock.monotonic()))

    # -- dependencies ---------------------------------------------------------------------

    def _watch_dependencies(self) -> None:
        if self._deps_task is not None and not self._deps_task.done():
            return
        self._deps_task = asyncio.create_task(self._await_dependencies(), name=f"deps-{self.name}")

    def _dependencies_verdict(self) -> Event | None:
        return dependencies_verdict(self.service.depends_on, self._board.state)

    async def _await_dependencies(self) -> None:
        event: Event = await self._board.wait_for(self._dependencies_verdict)
        if self.machine.state in (State.PENDING, State.RESTARTING):
            self.post(event)
