"""Wiring: config, Docker, probes and the stack in one process, driven by signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from supervisor import __version__
from supervisor.backups import BackupError, resolve_backup
from supervisor.config import ConfigError, ConfigProblem, HttpProbe, StackConfig
from supervisor.config_diff import diff_configs
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
from supervisor.docker_api import DockerError, DockerRuntime, DockerUnavailable
from supervisor.events import EventKind, EventLog, EventRecorder
from supervisor.exit_codes import EX_FAILURE as EXIT_FAILURE
from supervisor.exit_codes import EX_OK as EXIT_OK
from supervisor.file_watch import FileWatcher
from supervisor.probes import Prober, ProbeResult
from supervisor.reload_queue import ReloadQueue
from supervisor.service import State
from supervisor.stack import Stack, StackError
from supervisor.stack_file import load_stack
from supervisor.status import Observers, ServiceStatus, StackObserver
from supervisor.update_schedule import next_update
from supervisor.updates import Outcome, Updater, UpdateRequest, UpdateResult

log = structlog.get_logger(__name__)

GIL_SWITCH_INTERVAL = 0.0005
# How long a reload waits for a stack that is still coming up before applying anyway.
FIRST_START_WAIT = 300.0
# The automatic-update timer re-reads the schedule and the wall clock at least this often
# (a reload may change the schedule; the clock may jump).
SCHEDULE_RECHECK = 60.0


@dataclass
class ShutdownIntent:
    """Signal handlers only record intent here; the main task acts on it."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self) -> None:
        """First request: stop in order. Any further one: stop now."""
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did, or why it was refused."""

    ok: bool
    at: float  # wall-clock epoch seconds
    message: str
    errors: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be applied live


def file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


class Supervisor(StackObserver):
    """The running daemon: what the API, the CLI and systemd talk to."""

    def __init__(self, config_path: Path, config: StackConfig, runtime: DockerRuntime) -> None:
        self.config_path = config_path
        self.config = config
        self.config_digest = file_digest(config_path)
        self.runtime = runtime
        self.version = __version__
        self.started_monotonic = time.monotonic()
        self._lifecycle = Lifecycle()
        self.docker_connected = False
        self.last_reload: ReloadResult | None = None
        self.intent = ShutdownIntent()
        self.stack: Stack | None = None
        # Bumped whenever anything a service status shows may have changed (API caching);
        # the generation of each service's last change, and of the last reload (all of them).
        self.status_generation = 0
        self._service_changed_at: dict[str, int] = {}
        self._reloaded_at = 0
        # Components register here before the stack exists; the stack reports through it.
        self.observers = Observers()
        self.observers.add(self)
        # The event history (API, status page): fed by the observers, reloads and the API.
        self.events = EventLog(config.api.events_keep)
        self.observers.add(EventRecorder(self.events))
        self.reload_queue: ReloadQueue[ReloadResult] = ReloadQueue(self._reload)
        self._watcher: FileWatcher | None = None
        # Updates and reloads both recreate containers: one at a time, the other waits.
        self.changing = asyncio.Lock()
        self.last_update: UpdateResult | None = None
        self.stack_ready = asyncio.Event()
        # Components that come up after the first containers start (the API server): the
        # daemon is not ready (READY=1) while any is still on its way.
        self.coming_up: set[str] = set()

    @property
    def state(self) -> DaemonState:
        return self._lifecycle.state

    def advance(self, event: LifecycleEvent) -> None:
        """The one place the daemon's lifecycle moves (see `daemon_lifecycle`)."""
        old, self._lifecycle = self._lifecycle, advance(self._lifecycle, event)
        if self._lifecycle.state is not old.state:
            log.info("daemon state changed", old=old.state.value, new=self.state.value)

    def came_up(self, component: str) -> None:
        """`component` serves now (or gave up trying): it no longer holds readiness back."""
        self.coming_up.discard(component)
        # What the component brought (the API server's modules) lives as long as the rest.
        refreeze_heap()
        self.observers.component_came_up(component)

    def service_statuses(self) -> list[ServiceStatus]:
        """Every service's status; none before the stack exists."""
        return self.stack.statuses() if self.stack is not None else []

    def service_mark(self, service: str) -> int:
        """The generation of the last change to what `service`'s status shows."""
        return max(self._service_changed_at.get(service, 0), self._reloaded_at)

    def service_changed(self, status: ServiceStatus, old: State) -> None:
        self.status_generation += 1
        self._service_changed_at[status.name] = self.status_generation
        first_start = DaemonState.STARTING in (self.state, self._lifecycle.resume)
        if first_start and self.stack is not None and self.stack.target_reached():
            self.advance(TargetReached())
            log.info("stack up", services=len(self.stack.runners))

    def stack_stopping(self) -> None:
        self.advance(StopBegan())

    def probe_done(self, service: str, result: ProbeResult) -> None:
        self.status_generation += 1
        self._service_changed_at[service] = self.status_generation

    def reload_done(self, ok: bool, at: float) -> None:
        self.status_generation += 1
        self._reloaded_at = self.status_generation

    def engine_link(self, connected: bool, detail: str) -> None:
        self.docker_connected = connected

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_monotonic

    def request_reload(self) -> None:
        """Ask for a reload without waiting (SIGHUP, a config file edit)."""
        self.reload_queue.request()

    async def reload(self) -> ReloadResult:
        """Reload and return the result of a reload that began after this call."""
        return await self.reload_queue.request_and_wait()

    def watched_files(self) -> list[Path]:
        """The config file and every file it pulls in (env files, secret files, CA bundles)."""
        files = {self.config_path.absolute()}
        for service in self.config.services.values():
            files.update(service.env_files)
            probe = service.health.probe if service.health is not None else None
            if isinstance(probe, HttpProbe) and probe.ca_file is not None:
                files.add(probe.ca_file)
        files.update(secret.file for secret in self.config.secrets.values())
        return sorted(files)

    async def _reload(self) -> ReloadResult:
        """Validate the whole new config first; apply only the difference; never trade a good
        config for a bad one."""
        async with self.changing:
            self.observers.reload_started()
            self.advance(ReloadBegan())
            log.info("reload started", config=str(self.config_path))
            try:
                result = await self._validate_and_apply()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("reload failed; the running config stays", error=error, exc_info=True)
                if self.stack is not None:
                    self.config = self.stack.config  # as far as an apply got
                result = ReloadResult(
                    False, time.time(), "reload failed; the running config stays", errors=(error,)
                )
            finally:
                self.advance(ReloadEnded())  # back where it was, unless a stop began meanwhile
        self.last_reload = result
        self.events.resize(self.config.api.events_keep)
        self._publish_reload(result)
        self.observers.reload_done(result.ok, result.at)
        return result

    def _publish_reload(self, result: ReloadResult) -> None:
        changes = {"added": result.added, "removed": result.removed, "changed": result.changed}
        what = "; ".join(f"{k} {', '.join(v)}" for k, v in changes.items() if v)
        self.events.publish(
            EventKind.RELOAD,
            f"reload {'applied' if result.ok else 'refused'}: {what or result.message}",
            level="info" if result.ok else "error",
            ok=result.ok,
            errors=list(result.errors),
            added=list(result.added),
            removed=list(result.removed),
            changed=list(result.changed),
        )

    async def _validate_and_apply(self) -> ReloadResult:
        try:
            new = self._load_new_config()
        except ConfigError as exc:
            errors = tuple(str(p) for p in exc.problems)
            log.error("reload refused: config invalid, the running config stays", errors=errors)
            return ReloadResult(
                ok=False,
                at=time.time(),
                message="config invalid; the running config stays in force",
                errors=errors,
            )
        diff = diff_configs(self.config, new)
        for note in diff.not_applied:
            log.warning("reload: not applied live", note=note)
        try:
            if self.stack is not None and not diff.empty:
                await self._wait_for_first_start()
                await self.stack.apply(new, diff)
        except DockerError as exc:
            log.error("reload failed while applying", error=str(exc))
            if self.stack is not None:
                self.config = self.stack.config  # as far as it got
            return ReloadResult(False, time.time(), f"applying failed: {exc}", errors=(str(exc),))
        self.config = new
        self.config_digest = file_digest(self.config_path)
        if self._watcher is not None:
            self._watcher.watch(self.watched_files())
        log.info(
            "reload applied",
            added=diff.added,
            removed=diff.removed,
            recreated=diff.recreated,
            updated=diff.updated,
            unchanged=len(diff.unchanged),
        )
        return ReloadResult(
            ok=True,
            at=time.time(),
            message="applied"
            if not diff.empty
            else "nothing applied live: some changes need a daemon restart (see notes)"
            if diff.not_applied
            else "the running config already matches the file (nothing to change)",
            added=diff.added,
            removed=diff.removed,
            changed=diff.changed,
            notes=diff.not_applied,
        )

    def _load_new_config(self) -> StackConfig:
        new = load_stack(self.config_path)  # our config, or a Compose file
        if new.project != self.config.project:
            message = "cannot change on reload; run `down` and start the daemon again"
            raise ConfigError([ConfigProblem("project", message)])
        return new

    async def _wait_for_first_start(self) -> None:
        """A reload that arrives while the stack is still coming up is applied after."""
        assert self.stack is not None
        stack = self.stack
        if stack.settled():
            return
        log.info("reload waits for the stack's start to finish")
        try:
            async with asyncio.timeout(FIRST_START_WAIT):
                await stack.board.wait_for(lambda: True if stack.settled() else None)
        except TimeoutError:
            log.warning("stack still starting; applying the reload anyway")

    @asynccontextmanager
    async def reloading(self) -> AsyncIterator[None]:
        """Serve reloads for the daemon's lifetime: the queue, SIGHUP, and the file watcher."""
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            server = group.create_task(self.reload_queue.run(), name="reloads")
            self._watcher = FileWatcher(self.request_reload)
            self._watcher.watch(self.watched_files())
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            try:
                yield
            finally:
                loop.remove_signal_handler(signal.SIGHUP)
                self._watcher.close()
                self._watcher = None
                server.cancel()

    def updater(self) -> Updater:
        """The updater for the running stack; LookupError while there is none."""
        if self.stack is None:
            raise LookupError("not supervising a stack yet")
        return Updater(self.stack, self.runtime)

    async def update(self, request: UpdateRequest) -> UpdateResult:
        """Update images (waits for a reload under way); UnknownServices for a bad name."""
        updater = self.updater()
        async with self.changing:
            assert self.stack is not None
            await self._wait_for_first_start()
            log.info("update started", services=request.services, pull=request.pull)
            result = await updater.update(request)
        if not request.dry_run:
            self._record_update(result)
        return result

    async def backup(self, services: tuple[str, ...]) -> tuple[bool, str, list[str]]:
        """Back up the named services (all with `backup` when none): ok, message, files."""
        updater = self.updater()
        async with self.changing:
            try:
                taken = await updater.backup(services)
            except BackupError as exc:
                log.error("backup failed", error=str(exc))
                return False, str(exc), []
        files = [str(b.path) for b in taken]
        return True, f"{len(files)} backup(s) taken", files

    async def restore(self, service: str, backup: str) -> tuple[bool, str]:
        """Restore a backup into a service, its dependents stopped meanwhile: ok, message."""
        updater = self.updater()
        source = resolve_backup(self.config.backups_dir, service, backup)
        async with self.changing:
            try:
                output = await updater.restore(service, source)
            except BackupError as exc:
                log.error("restore failed", service=service, error=str(exc))
                return False, str(exc)
        return True, f"restored {service} from {source}" + (f"\n{output}" if output else "")

    def _record_update(self, result: UpdateResult) -> None:
        self.last_update = result
        outcomes = {s.service: s.outcome.value for s in result.services}
        self.observers.update_done(result.ok, outcomes, result.at)
        for outcome in result.services:
            self.events.publish(
                EventKind.UPDATE,
                f"update {outcome.outcome.value}: {outcome.reason}",
                service=outcome.service,
                level="info" if outcome.outcome is Outcome.UPDATED else "warning",
                outcome=outcome.outcome.value,
                old_image=outcome.old_image,
                new_image=outcome.new_image,
            )
        level = "info" if result.ok else "error"
        getattr(log, level)(
            "update finished",
            ok=result.ok,
            message=result.message,
            services=[f"{s.service}: {s.outcome.value}" for s in result.services],
            notes=list(result.notes),
        )

    @asynccontextmanager
    async def updating(self) -> AsyncIterator[None]:
        """For the daemon's lifetime: finish an interrupted update, then the update schedule."""
        async with asyncio.TaskGroup() as group:
            task = group.create_task(self._updates_in_background(), name="updates")
            try:
                yield
            finally:
                task.cancel()

    async def _updates_in_background(self) -> None:
        await self.stack_ready.wait()
        async with self.changing:
            # Not after the whole first start: the interrupted service may never settle.
            recovered = await self.updater().recover(FIRST_START_WAIT)
        if recovered is not None:
            self._record_update(recovered)
        anchor = datetime.now().astimezone()
        while True:
            schedule = self.config.update
            if schedule is None:
                await asyncio.sleep(SCHEDULE_RECHECK)
                continue
            now = datetime.now().astimezone()
            due = next_update(schedule, now, anchor)
            wait = (due - now).total_seconds()
            if wait > SCHEDULE_RECHECK:
                await asyncio.sleep(SCHEDULE_RECHECK)
                continue
            await asyncio.sleep(wait)
            anchor = due  # the next slot is `every` after this one
            log.info("automatic update due", pull=schedule.pull)
            with contextlib.suppress(LookupError):
                await self.update(UpdateRequest(pull=schedule.pull))


# Something that runs beside the stack for the daemon's lifetime (the API server, the systemd
# notifier): given the supervisor, an async context manager entered before the stack starts.
Component = Callable[[Supervisor], AbstractAsyncContextManager[Any]]


async def wait_for_docker(
    runtime: DockerRuntime, stop: asyncio.Event, *, initial: float = 0.5, maximum: float = 15.0
) -> bool:
    """Wait with backoff until the engine answers; False if a stop came first."""
    delay = initial
    while not stop.is_set():
        try:
            await runtime.ping()
        except DockerUnavailable as exc:
            log.warning("waiting for Docker", error=str(exc), retry_in=round(delay, 2))
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, maximum)
        else:
            return True
    return False


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the cyclic garbage collector off what start-up made (modules, config, runners).

    All of it lives as long as the daemon, yet with 50 probed services the probes' short-lived
    cycles set off a full collection about every 20 s, each walking that whole heap (~125 ms):
    a sixth of the daemon's steady-state CPU. Reference counting still frees frozen objects.
    """
    # What start-up left as garbage is not frozen in. The young generations only: a full
    # collection would walk every imported module too (~35 ms before the first start).
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def refreeze_heap() -> None:
    """Add what was made since to a heap that `frozen_heap` froze (no-op when none is)."""
    if gc.get_freeze_count():
        gc.collect(1)
        gc.freeze()


async def run_daemon(
    config_path: Path,
    config: StackConfig,
    *,
    runtime: DockerRuntime | None = None,
    components: Sequence[Component] = (),
    shutdown_trigger: Callable[[ShutdownIntent], Coroutine[Any, Any, None]] | None = None,
) -> int:
    """Run the stack until SIGTERM/SIGINT (or the injected trigger); return the exit code."""
    # Worker threads (docker-py calls, /metrics rendering) hold the GIL in 5 ms slices by
    # default; the event loop gives it up at every syscall and waits a slice to get it back,
    # so answers stall behind a busy thread. Short slices keep the loop responsive.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    supervisor = Supervisor(config_path, config, runtime or DockerRuntime())
    intent = supervisor.intent
    loop = asyncio.get_running_loop()
    if shutdown_trigger is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, intent.request)
    trigger = (
        asyncio.create_task(shutdown_trigger(intent), name="shutdown-trigger")
        if shutdown_trigger is not None
        else None
    )
    log.info("starting", project=config.project, services=len(config.services), version=__version__)
    try:
        # Made before anything runs: what a component cannot set up (the API's address is
        # taken) ends the daemon here, as itself, before Docker is touched.
        parts = [component(supervisor) for component in components]
        async with AsyncExitStack() as running:
            await running.enter_async_context(supervisor.reloading())
            await running.enter_async_context(supervisor.updating())
            for part in parts:
                await running.enter_async_context(part)
            if not await wait_for_docker(supervisor.runtime, intent.stop):
                return EXIT_OK
            supervisor.docker_connected = True
            async with Prober(supervisor.runtime) as prober:
                supervisor.stack = Stack(
                    config, supervisor.runtime, prober, observers=supervisor.observers
                )
                supervisor.advance(EngineReached())
                supervisor.stack_ready.set()
                with frozen_heap():
                    await supervisor.stack.run(intent.stop, intent.hurry)
    except StackError as exc:
        log.error("stack could not start", error=str(exc))
        return EXIT_FAILURE
    finally:
        supervisor.advance(StopBegan())
        if trigger is not None:
            trigger.cancel()
        await supervisor.runtime.close()
        if shutdown_trigger is None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        supervisor.advance(Stopped())
    log.info("stopped")
    return EXIT_OK
