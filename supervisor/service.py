"""One service's lifecycle as a pure state machine: (state, event, now) -> (state, actions).

No I/O here: the runner (`runner.py`) feeds events in, performs the actions that come out, and
supplies the time. Events are named in the past tense, actions in the imperative.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from supervisor.config import Condition, Dependency, RestartPolicy, ServiceConfig, ServiceType

# Re-exported: these value types lived here before `supervisor.model`.
from supervisor.model import CONTAINER_UP as CONTAINER_UP  # noqa: PLC0414 - re-export
from supervisor.model import QUIESCENT as QUIESCENT  # noqa: PLC0414 - re-export
from supervisor.model import RestartCause as RestartCause  # noqa: PLC0414 - re-export
from supervisor.model import State as State  # noqa: PLC0414 - re-export

# -- events (what happened) -----------------------------------------------------------------


@dataclass(frozen=True)
class DependenciesMet:
    pass


@dataclass(frozen=True)
class DependencyFailed:
    dependency: str


@dataclass(frozen=True)
class ContainerStarted:
    container_id: str


@dataclass(frozen=True)
class JobFoundCompleted:
    """A job's container had already exited 0 and is adopted as done (daemon restart)."""

    container_id: str


@dataclass(frozen=True)
class StartFailed:
    error: str


@dataclass(frozen=True)
class ProbeSucceeded:
    detail: str = ""


@dataclass(frozen=True)
class ProbeFailed:
    detail: str = ""


@dataclass(frozen=True)
class ContainerExited:
    exit_code: int | None
    oom_killed: bool = False
    removed: bool = False


@dataclass(frozen=True)
class StopRequested:
    by_operator: bool = False


@dataclass(frozen=True)
class ContainerStopped:
    pass


@dataclass(frozen=True)
class BackoffElapsed:
    pass


@dataclass(frozen=True)
class ShutdownBegan:
    """The daemon is stopping the whole stack: nothing is restarted from here on."""


@dataclass(frozen=True)
class StartRequested:
    """An operator asked for a (stopped or failed) service to run again."""


@dataclass(frozen=True)
class RestartRequested:
    reason: str
    cause: RestartCause = RestartCause.OPERATOR


Event = (
    DependenciesMet
    | DependencyFailed
    | ContainerStarted
    | JobFoundCompleted
    | StartFailed
    | ProbeSucceeded
    | ProbeFailed
    | ContainerExited
    | StopRequested
    | ContainerStopped
    | BackoffElapsed
    | StartRequested
    | RestartRequested
    | ShutdownBegan
)


# -- actions (what to do) -------------------------------------------------------------------


@dataclass(frozen=True)
class StartContainer:
    """Make sure the container exists with the current config, and start it."""


@dataclass(frozen=True)
class StopContainer:
    reason: str


@dataclass(frozen=True)
class ScheduleBackoff:
    delay: float


@dataclass(frozen=True)
class CancelBackoff:
    pass


@dataclass(frozen=True)
class WaitForDependencies:
    pass


Action = StartContainer | StopContainer | ScheduleBackoff | CancelBackoff | WaitForDependencies


def condition_met(condition: Condition, state: State) -> bool:
    """Whether a dependency in `state` satisfies `condition`."""
    if condition is Condition.STARTED:
        return state in CONTAINER_UP or state is State.COMPLETED
    if condition is Condition.HEALTHY:
        return state is State.HEALTHY
    return state is State.COMPLETED


def condition_broken(state: State) -> bool:
    """Whether a dependency in `state` will not meet any condition without an operator."""
    return state in (State.FAILED, State.BLOCKED)


def dependencies_verdict(
    depends_on: Mapping[str, Dependency], state_of: Callable[[str], State]
) -> Event | None:
    """DependencyFailed or DependenciesMet once the dependencies decide it, else None."""
    for name in depends_on:
        if condition_broken(state_of(name)):
            return DependencyFailed(name)
    if all(condition_met(d.condition, state_of(n)) for n, d in depends_on.items()):
        return DependenciesMet()
    return None


@dataclass
class ServiceMachine:
    """The lifecycle of one service. `handle` is the only way in; `_move` the only state change."""

    service: ServiceConfig
    state: State = State.PENDING
    reason: str = "waiting for dependencies"
    since: float = 0.0
    container_id: str | None = None
    started_at: float | None = None
    healthy_since: float | None = None
    consecutive_failures: int = 0
    restarts: int = 0
    last_exit_code: int | None = None
    operator_stopped: bool = False
    shutting_down: bool = False
    blocked_by: str | None = None
    last_restart_cause: RestartCause | None = None
    backoff_step: int = 0
    restart_times: deque[float] = field(default_factory=deque)
    transitions: list[tuple[State, State, str]] = field(default_factory=list)

    @property
    def is_job(self) -> bool:
        return self.service.type is ServiceType.JOB

    @property
    def container_up(self) -> bool:
        return self.state in CONTAINER_UP

    def _move(self, state: State, reason: str, now: float) -> None:
        if state is self.state and reason == self.reason:
            return
        self.transitions.append((self.state, state, reason))
        if state is not self.state:
            self.since = now
        self.state, self.reason = state, reason

    def take_transitions(self) -> list[tuple[State, State, str]]:
        """The (old, new, reason) moves made since the last call, in order."""
        moves, self.transitions = self.transitions, []
        return moves

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event; return the actions the runner must perform, in order."""
        match event:
            case StopRequested(by_operator):
                return self._stop(by_operator, now)
            case StartRequested():
                return self._operator_start(now)
            case RestartRequested(reason, cause):
                return self._operator_restart(reason, cause, now)
            case ShutdownBegan():
                self.shutting_down = True
                return []
        handler = getattr(self, f"_in_{self.state.value}", None)
        return handler(event, now) if handler is not None else []

    # -- per-state handlers ---------------------------------------------------------------

    def _in_pending(self, event: Event, now: float) -> list[Action]:
        match event:
            case DependenciesMet():
                # PENDING -> PENDING: dependencies met, the runner brings the container up
                self._move(State.PENDING, "starting container", now)
                return [StartContainer()]
            case DependencyFailed(dependency):
                # PENDING -> BLOCKED: it cannot start without that dependency
                self.blocked_by = dependency
                self._move(State.BLOCKED, f"dependency {dependency} failed", now)
                return []
            case ContainerStarted(container_id):
                return self._started(container_id, now)
            case JobFoundCompleted(container_id):
                # PENDING -> COMPLETED: adopted, not run again
                self.container_id = container_id
                self.last_exit_code = 0
                self._move(State.COMPLETED, "completed before the daemon restarted", now)
                return []
            case StartFailed(error):
                # PENDING -> FAILED: a first start that fails (pull, create) needs the operator
                self._move(State.FAILED, error, now)
                return []
        return []

    def _in_restarting(self, event: Event, now: float) -> list[Action]:
        match event:
            case BackoffElapsed():
                # Backoff over: start again only once dependencies meet their conditions, so a
                # stack that went down together (dockerd restart) comes back in order.
                self._move(State.RESTARTING, "waiting for dependencies", now)
                return [WaitForDependencies()]
            case DependenciesMet():
                return [StartContainer()]
            case DependencyFailed(dependency):
                # RESTARTING -> BLOCKED
                self.blocked_by = dependency
                self._move(State.BLOCKED, f"dependency {dependency} failed", now)
                return []
            case ContainerStarted(container_id):
                return self._started(container_id, now)
            case StartFailed(error):
                return self._restart(
                    f"start failed: {error}",
                    RestartCause.START_FAILED,
                    now,
                    container_running=False,
                )
        return []

    def _in_starting(self, event: Event, now: float) -> list[Action]:
        match event:
            case ProbeSucceeded():
                # STARTING -> HEALTHY: the first success ends the start period
                self.consecutive_failures = 0
                self.healthy_since = now
                self._move(State.HEALTHY, "probe succeeded", now)
                return []
            case ProbeFailed(detail):
                if self._in_start_period(now):
                    return []  # failures inside start_period do not count
                return self._probe_failed(detail, now)
            case ContainerExited():
                return self._exited(event, now)
        return []

    def _in_running(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, ContainerExited):
            return self._exited(event, now)
        return []

    def _in_healthy(self, event: Event, now: float) -> list[Action]:
        match event:
            case ProbeSucceeded():
                self.consecutive_failures = 0
                if self.healthy_since is not None and (
                    now - self.healthy_since >= self.service.restart.reset_after
                ):
                    self.backoff_step = 0  # stayed healthy long enough: forget past crashes
                return []
            case ProbeFailed(detail):
                return self._probe_failed(detail, now)
            case ContainerExited():
                return self._exited(event, now)
        return []

    def _in_unhealthy(self, event: Event, now: float) -> list[Action]:
        match event:
            case ProbeSucceeded():
                # UNHEALTHY -> HEALTHY: only reachable under policy `no`, which never restarts
                self.consecutive_failures = 0
                self.healthy_since = now
                self._move(State.HEALTHY, "probe succeeded", now)
                return []
            case ProbeFailed():
                self.consecutive_failures += 1
                return []
            case ContainerExited():
                return self._exited(event, now)
        return []

    def _in_stopping(self, event: Event, now: float) -> list[Action]:
        if isinstance(event, ContainerStopped):
            # STOPPING -> STOPPED
            self._move(
                State.STOPPED, "stopped by operator" if self.operator_stopped else "stopped", now
            )
            self.container_id = self.container_id  # keep it: the stopped container stays
        return []

    # -- shared moves -------------------------------------------------------------------

    def _started(self, container_id: str, now: float) -> list[Action]:
        self.container_id = container_id
        self.started_at = now
        self.consecutive_failures = 0
        self.healthy_since = None
        if self.service.health is not None and not self.is_job:
            # -> STARTING: probe quickly until the first success
            self._move(State.STARTING, "container started, waiting for health", now)
        else:
            # -> RUNNING: nothing to probe (or a job at work)
            self._move(State.RUNNING, "container started", now)
        return []

    def _in_start_period(self, now: float) -> bool:
        assert self.service.health is not None
        return (
            self.started_at is not None and now - self.started_at < self.service.health.start_period
        )

    def _probe_failed(self, detail: str, now: float) -> list[Action]:
        assert self.service.health is not None
        self.consecutive_failures += 1
        if self.consecutive_failures < self.service.health.retries:
            return []
        # -> UNHEALTHY: `retries` consecutive failures
        reason = f"{self.consecutive_failures} consecutive probe failures: {detail}"
        self._move(State.UNHEALTHY, reason, now)
        if self.service.restart.policy is RestartPolicy.NO:
            return []
        return self._restart(
            f"unhealthy ({detail})", RestartCause.UNHEALTHY, now, container_running=True
        )

    def _exited(self, event: ContainerExited, now: float) -> list[Action]:
        code = event.exit_code
        self.last_exit_code = code
        if event.removed:
            what, cause = "container removed", RestartCause.REMOVED
        elif event.oom_killed:
            what, cause = "OOM-killed", RestartCause.OOM
        else:
            what, cause = f"exited with code {code}", RestartCause.EXITED
        policy = self.service.restart.policy
        if self.is_job and code == 0 and not event.removed:
            # RUNNING -> COMPLETED
            self._move(State.COMPLETED, "exited with code 0", now)
            return []
        # A long-running service that exits unasked has failed, whatever its code (an
        # out-of-band `docker stop` may well exit 0); a job fails only on a non-zero code.
        failed = code != 0 or event.removed or event.oom_killed or not self.is_job
        if policy is RestartPolicy.NO or (policy is RestartPolicy.ON_FAILURE and not failed):
            # -> FAILED: the policy says leave it be
            self._move(State.FAILED, what, now)
            return []
        return self._restart(what, cause, now, container_running=False)

    def _restart(
        self, why: str, cause: RestartCause, now: float, *, container_running: bool
    ) -> list[Action]:
        limit = self.service.restart
        while self.restart_times and now - self.restart_times[0] > limit.limit_window:
            self.restart_times.popleft()
        stop: list[Action] = [StopContainer(why)] if container_running else []
        if self.shutting_down:
            # -> STOPPED: the stack is going down; a restart now would only be undone
            self._move(State.STOPPED, f"{why} during shutdown", now)
            return stop
        if len(self.restart_times) >= limit.limit_count:
            # -> FAILED: crash loop; loud, and never retried on its own
            self._move(
                State.FAILED,
                f"crash loop: {len(self.restart_times)} restarts within "
                f"{limit.limit_window:g}s, last: {why}",
                now,
            )
            return stop
        self.restart_times.append(now)
        self.restarts += 1
        self.last_restart_cause = cause
        if self._ran_long(now):
            # A crash after a long run is the first of its kind: `backoff.first` (0s unless
            # configured), and the exponential backoff starts over from the next crash.
            self.backoff_step = 0
            delay = limit.backoff_first
        else:
            delay = min(limit.backoff_initial * 2**self.backoff_step, limit.backoff_max)
            self.backoff_step += 1
        if delay <= 0:
            # -> RESTARTING: stop (if still up) and start again as soon as dependencies allow
            self._move(State.RESTARTING, f"{why}; restart {self.restarts} at once", now)
            return [*stop, WaitForDependencies()]
        # -> RESTARTING: stop (if still up), wait out the backoff, start again
        self._move(State.RESTARTING, f"{why}; restart {self.restarts} in {delay:g}s", now)
        return [*stop, ScheduleBackoff(delay)]

    def _ran_long(self, now: float) -> bool:
        """Whether the container that just went down had run for `reset_after` or longer.

        Only a run counts: a start that failed after an earlier long run is not another
        first crash, so a broken image still backs off.
        """
        return (
            self.state in CONTAINER_UP
            and self.started_at is not None
            and now - self.started_at >= self.service.restart.reset_after
        )

    def _stop(self, by_operator: bool, now: float) -> list[Action]:
        self.operator_stopped = by_operator
        if self.state in CONTAINER_UP:
            # -> STOPPING
            self._move(State.STOPPING, "stopping", now)
            return [StopContainer("stop requested")]
        if self.state is State.RESTARTING:
            # RESTARTING -> STOPPING: drop the pending restart, make sure nothing runs
            self._move(State.STOPPING, "stopping", now)
            return [CancelBackoff(), StopContainer("stop requested")]
        if self.state in (State.PENDING, State.BLOCKED):
            # PENDING -> STOPPED: never started
            self._move(State.STOPPED, "stopped before it started", now)
        return []

    def _operator_start(self, now: float) -> list[Action]:
        if self.state not in (State.STOPPED, State.FAILED, State.BLOCKED, State.COMPLETED):
            return []
        # -> PENDING: an operator asked for it; forget the crash history
        self.operator_stopped = False
        self.blocked_by = None
        self.backoff_step = 0
        self.restart_times.clear()
        self._move(State.PENDING, "waiting for dependencies", now)
        return [WaitForDependencies()]

    def _operator_restart(self, reason: str, cause: RestartCause, now: float) -> list[Action]:
        if self.state in CONTAINER_UP:
            self.last_restart_cause = cause
            # -> RESTARTING without backoff: asked for, not a crash
            self._move(State.RESTARTING, reason, now)
            return [StopContainer(reason), StartContainer()]
        return self._operator_start(now)
