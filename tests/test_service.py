"""The service state machine, one test per move, with a fake clock (plain numbers)."""

from __future__ import annotations

import textwrap

import pytest

from supervisor.config import Condition, Dependency, ServiceConfig, parse_config
from supervisor.service import (
    BackoffElapsed,
    CancelBackoff,
    ContainerExited,
    ContainerStarted,
    ContainerStopped,
    DependenciesMet,
    DependencyFailed,
    JobFoundCompleted,
    ProbeFailed,
    ProbeSucceeded,
    RestartCause,
    RestartRequested,
    ScheduleBackoff,
    ServiceMachine,
    ShutdownBegan,
    StartContainer,
    StartFailed,
    StartRequested,
    State,
    StopContainer,
    StopRequested,
    WaitForDependencies,
    condition_met,
    dependencies_verdict,
)


def state_of(m: ServiceMachine) -> State:
    """The machine's state, read afresh (mypy would keep an earlier assert's narrowing)."""
    return m.state


def service(extra: str = "", *, job: bool = False, probe: bool = True) -> ServiceConfig:
    body = "    image: img:1\n"
    if job:
        body += "    type: job\n"
    if probe:
        body += "    health: {http: {port: 80}, retries: 3, start_period: 10s, interval: 5s}\n"
    body += textwrap.indent(textwrap.dedent(extra), "    ")
    text = (
        "version: 1\nproject: p\n"
        "defaults:\n"
        "  restart: {policy: on-failure, backoff: {initial: 1s, max: 8s},"
        " limit: {count: 3, window: 60s}, reset_after: 100s}\n"
        f"services:\n  svc:\n{body}"
    )
    return parse_config(text).services["svc"]


def started(machine: ServiceMachine, now: float = 0.0) -> ServiceMachine:
    assert machine.handle(DependenciesMet(), now) == [StartContainer()]
    assert machine.handle(ContainerStarted("c1"), now) == []
    return machine


def healthy(machine: ServiceMachine, now: float = 1.0) -> ServiceMachine:
    started(machine)
    machine.handle(ProbeSucceeded("HTTP 200"), now)
    assert machine.state is State.HEALTHY
    return machine


def test_pending_to_pending_starts_container_once_dependencies_are_met() -> None:
    m = ServiceMachine(service())
    assert m.handle(DependenciesMet(), 0) == [StartContainer()]
    assert m.state is State.PENDING


def test_pending_to_blocked_when_a_dependency_failed() -> None:
    m = ServiceMachine(service())
    assert m.handle(DependencyFailed("db"), 0) == []
    assert m.state is State.BLOCKED
    assert "db" in m.reason


def test_pending_to_failed_when_first_start_fails() -> None:
    m = ServiceMachine(service())
    m.handle(DependenciesMet(), 0)
    m.handle(StartFailed("image img:1: not found"), 0)
    assert m.state is State.FAILED
    assert "img:1" in m.reason


def test_pending_to_starting_with_a_probe() -> None:
    m = started(ServiceMachine(service()))
    assert m.state is State.STARTING
    assert m.container_id == "c1"


def test_pending_to_running_without_a_probe() -> None:
    m = started(ServiceMachine(service(probe=False)))
    assert m.state is State.RUNNING


def test_starting_to_healthy_on_first_success() -> None:
    m = healthy(ServiceMachine(service()))
    assert m.consecutive_failures == 0


def test_failures_inside_start_period_do_not_count() -> None:
    m = started(ServiceMachine(service()), now=0)
    for t in range(9):
        assert m.handle(ProbeFailed("HTTP 503"), t) == []
    assert m.state is State.STARTING
    assert m.consecutive_failures == 0


def test_starting_to_unhealthy_after_start_period_and_retries() -> None:
    m = started(ServiceMachine(service()), now=0)
    m.handle(ProbeFailed("x"), 11)
    m.handle(ProbeFailed("x"), 12)
    assert m.state is State.STARTING
    actions = m.handle(ProbeFailed("HTTP 500"), 13)
    assert state_of(m) is State.RESTARTING
    assert actions == [StopContainer("unhealthy (HTTP 500)"), ScheduleBackoff(1.0)]


def test_healthy_success_resets_consecutive_failures() -> None:
    m = healthy(ServiceMachine(service()))
    m.handle(ProbeFailed("x"), 2)
    m.handle(ProbeFailed("x"), 3)
    m.handle(ProbeSucceeded(), 4)
    m.handle(ProbeFailed("x"), 5)
    m.handle(ProbeFailed("x"), 6)
    assert m.state is State.HEALTHY


def test_healthy_to_restarting_after_retries_consecutive_failures() -> None:
    m = healthy(ServiceMachine(service()))
    for t in (2, 3):
        assert m.handle(ProbeFailed("timeout"), t) == []
    actions = m.handle(ProbeFailed("timeout"), 4)
    assert m.state is State.RESTARTING
    assert isinstance(actions[0], StopContainer)
    assert actions[1] == ScheduleBackoff(1.0)


def test_unhealthy_stays_under_policy_no_and_recovers() -> None:
    m = healthy(ServiceMachine(service("restart: {policy: 'no'}\n")))
    for t in (2, 3, 4):
        assert m.handle(ProbeFailed("x"), t) == []
    assert m.state is State.UNHEALTHY
    m.handle(ProbeSucceeded(), 5)
    assert state_of(m) is State.HEALTHY


def test_restarting_waits_for_dependencies_after_backoff_then_starts() -> None:
    m = healthy(ServiceMachine(service()))
    m.handle(ContainerExited(1), 2)
    assert m.state is State.RESTARTING
    assert m.handle(BackoffElapsed(), 3) == [WaitForDependencies()]
    assert m.handle(DependenciesMet(), 3) == [StartContainer()]
    m.handle(ContainerStarted("c1"), 3)
    assert state_of(m) is State.STARTING
    assert m.restarts == 1


def test_backoff_doubles_up_to_max() -> None:
    svc = service("restart: {limit: {count: 100, window: 1h}}\n")
    m = started(ServiceMachine(svc))
    delays = []
    for t in range(6):
        actions = m.handle(ContainerExited(1), t)
        delays.append(next(a.delay for a in actions if isinstance(a, ScheduleBackoff)))
        m.handle(BackoffElapsed(), t)
        m.handle(ContainerStarted("c1"), t)
    assert delays == [1, 2, 4, 8, 8, 8]


def test_backoff_resets_after_staying_healthy() -> None:
    m = healthy(ServiceMachine(service()), now=0)
    m.handle(ContainerExited(1), 1)
    m.handle(BackoffElapsed(), 2)
    m.handle(ContainerStarted("c1"), 2)
    m.handle(ProbeSucceeded(), 3)
    m.handle(ProbeSucceeded(), 200)  # healthy for longer than reset_after
    m.handle(ContainerExited(1), 201)  # the first crash after a long run: at once
    m.handle(ContainerStarted("c1"), 201)
    actions = m.handle(ContainerExited(1), 202)
    assert ScheduleBackoff(1.0) in actions  # not 2s or 4s: the earlier crashes are forgotten


def test_crash_loop_limit_fails_the_service() -> None:
    m = started(ServiceMachine(service()))
    for t in range(3):
        m.handle(ContainerExited(1), t)
        m.handle(BackoffElapsed(), t)
        m.handle(ContainerStarted("c1"), t)
    m.handle(ContainerExited(1), 4)
    assert m.state is State.FAILED
    assert "crash loop" in m.reason


def test_crash_loop_window_forgets_old_restarts() -> None:
    m = started(ServiceMachine(service()))
    for t in (0, 1, 2):
        m.handle(ContainerExited(1), t)
        m.handle(BackoffElapsed(), t)
        m.handle(ContainerStarted("c1"), t)
    m.handle(ContainerExited(1), 100)
    assert m.state is State.RESTARTING


def test_exit_under_policy_no_fails() -> None:
    m = started(ServiceMachine(service("restart: {policy: 'no'}\n", probe=False)))
    m.handle(ContainerExited(3), 1)
    assert m.state is State.FAILED
    assert m.last_exit_code == 3


def test_unasked_clean_exit_of_a_service_is_a_failure_under_on_failure() -> None:
    m = started(ServiceMachine(service(probe=False)))
    assert ScheduleBackoff(1.0) in m.handle(ContainerExited(0), 1)
    assert m.state is State.RESTARTING


def test_restarting_to_blocked_when_a_dependency_failed_meanwhile() -> None:
    m = started(ServiceMachine(service()))
    m.handle(ContainerExited(1), 1)
    m.handle(BackoffElapsed(), 2)
    m.handle(DependencyFailed("db"), 2)
    assert m.state is State.BLOCKED
    assert m.blocked_by == "db"


def test_start_failure_while_restarting_backs_off_again() -> None:
    m = started(ServiceMachine(service()))
    m.handle(ContainerExited(1), 1)
    m.handle(BackoffElapsed(), 2)
    m.handle(DependenciesMet(), 2)
    actions = m.handle(StartFailed("engine said no"), 2)
    assert actions == [ScheduleBackoff(2.0)]
    assert m.last_restart_cause is RestartCause.START_FAILED


def test_oom_kill_is_a_failure_and_restarts() -> None:
    m = started(ServiceMachine(service()))
    m.handle(ContainerExited(137, oom_killed=True), 1)
    assert m.state is State.RESTARTING
    assert "OOM" in m.reason


def test_removed_container_is_restarted_under_always() -> None:
    m = started(ServiceMachine(service("restart: {policy: always}\n")))
    m.handle(ContainerExited(None, removed=True), 1)
    assert m.state is State.RESTARTING


def test_job_exit_zero_completes() -> None:
    m = started(ServiceMachine(service(job=True, probe=False)))
    assert m.state is State.RUNNING
    m.handle(ContainerExited(0), 1)
    assert state_of(m) is State.COMPLETED


def test_job_exit_nonzero_fails_by_default() -> None:
    m = started(ServiceMachine(service(job=True, probe=False)))
    m.handle(ContainerExited(2), 1)
    assert m.state is State.FAILED
    assert "code 2" in m.reason


def test_job_retries_when_its_policy_says_so() -> None:
    m = started(ServiceMachine(service("restart: {policy: on-failure}\n", job=True, probe=False)))
    m.handle(ContainerExited(2), 1)
    assert m.state is State.RESTARTING


def test_stop_from_up_goes_through_stopping() -> None:
    m = healthy(ServiceMachine(service()))
    assert m.handle(StopRequested(), 2) == [StopContainer("stop requested")]
    assert m.state is State.STOPPING
    m.handle(ContainerExited(143), 3)  # our own stop's exit: not a failure
    assert m.state is State.STOPPING
    m.handle(ContainerStopped(), 3)
    assert state_of(m) is State.STOPPED


def test_stop_while_restarting_cancels_the_backoff() -> None:
    m = started(ServiceMachine(service()))
    m.handle(ContainerExited(1), 1)
    actions = m.handle(StopRequested(by_operator=True), 2)
    assert actions == [CancelBackoff(), StopContainer("stop requested")]
    m.handle(ContainerStopped(), 2)
    assert m.state is State.STOPPED
    assert m.operator_stopped


def test_stop_while_pending_never_starts() -> None:
    m = ServiceMachine(service())
    assert m.handle(StopRequested(), 0) == []
    assert m.state is State.STOPPED


def test_operator_stop_is_not_undone_by_a_late_exit() -> None:
    m = healthy(ServiceMachine(service("restart: {policy: always}\n")))
    m.handle(StopRequested(by_operator=True), 2)
    m.handle(ContainerStopped(), 3)
    assert m.handle(ContainerExited(1), 4) == []
    assert m.handle(BackoffElapsed(), 5) == []
    assert m.state is State.STOPPED


def test_operator_start_from_failed_waits_for_dependencies_again() -> None:
    m = started(ServiceMachine(service("restart: {policy: 'no'}\n")))
    m.handle(ContainerExited(1), 1)
    assert m.state is State.FAILED
    assert m.handle(StartRequested(), 2) == [WaitForDependencies()]
    assert state_of(m) is State.PENDING


def test_operator_restart_skips_backoff_and_crash_count() -> None:
    m = healthy(ServiceMachine(service()))
    actions = m.handle(RestartRequested("operator"), 2)
    assert actions == [StopContainer("operator"), StartContainer()]
    m.handle(ContainerStopped(), 2)
    m.handle(ContainerStarted("c2"), 2)
    assert m.state is State.STARTING
    assert m.restarts == 0


@pytest.mark.parametrize(
    ("condition", "state", "met"),
    [
        (Condition.STARTED, State.RUNNING, True),
        (Condition.STARTED, State.STARTING, True),
        (Condition.STARTED, State.COMPLETED, True),
        (Condition.STARTED, State.PENDING, False),
        (Condition.HEALTHY, State.STARTING, False),
        (Condition.HEALTHY, State.HEALTHY, True),
        (Condition.COMPLETED, State.RUNNING, False),
        (Condition.COMPLETED, State.COMPLETED, True),
    ],
)
def test_condition_met(condition: Condition, state: State, met: bool) -> None:
    assert condition_met(condition, state) is met


def test_no_restart_once_shutdown_began() -> None:
    m = healthy(ServiceMachine(service("restart: {policy: always}\n")))
    m.handle(ShutdownBegan(), 2)
    assert m.handle(ContainerExited(137), 3) == []
    assert m.state is State.STOPPED
    assert "during shutdown" in m.reason


def test_pending_to_completed_for_a_job_found_completed() -> None:
    m = ServiceMachine(service(job=True, probe=False))
    m.handle(DependenciesMet(), 0)
    assert m.handle(JobFoundCompleted("c0"), 0) == []
    assert m.state is State.COMPLETED
    assert m.take_transitions()[-1][:2] == (State.PENDING, State.COMPLETED)


def _crash_after(machine: ServiceMachine, ran: float, now: float) -> tuple[list[object], float]:
    """Start the container at `now`, let it run `ran` seconds, crash it; (actions, when)."""
    machine.handle(DependenciesMet(), now)
    machine.handle(ContainerStarted("c1"), now)
    return list(machine.handle(ContainerExited(1), now + ran)), now + ran


@pytest.mark.parametrize(
    ("first", "runs", "expected"),
    [
        # reset_after is 100s. A long run, then crashes at once: first restart immediate,
        # backoff (1s, 2s, ...) from the second crash on.
        ("", [150, 1, 1], [WaitForDependencies(), ScheduleBackoff(1.0), ScheduleBackoff(2.0)]),
        # Exactly reset_after counts as long.
        ("", [100], [WaitForDependencies()]),
        # Short runs only: the exponential backoff as before.
        ("", [5, 1, 1], [ScheduleBackoff(1.0), ScheduleBackoff(2.0), ScheduleBackoff(4.0)]),
        # A short run, then a long one: the long run starts the count over.
        ("", [5, 150, 1], [ScheduleBackoff(1.0), WaitForDependencies(), ScheduleBackoff(1.0)]),
        # Two long runs in a row: each first crash is immediate.
        ("", [150, 150], [WaitForDependencies(), WaitForDependencies()]),
        # `backoff.first` configured: that delay instead of none.
        ("first: 3s", [150, 1], [ScheduleBackoff(3.0), ScheduleBackoff(1.0)]),
    ],
)
def test_first_restart_after_a_long_run(
    first: str, runs: list[float], expected: list[object]
) -> None:
    backoff = f"{{initial: 1s, max: 8s, {first}}}" if first else "{initial: 1s, max: 8s}"
    svc = service(
        f"restart: {{backoff: {backoff}, limit: {{count: 100, window: 1h}}}}\n", probe=False
    )
    m = ServiceMachine(svc)
    now, got = 0.0, []
    for ran in runs:
        actions, now = _crash_after(m, ran, now)
        assert m.state is State.RESTARTING
        got.append(actions[-1])
        if isinstance(actions[-1], ScheduleBackoff):
            m.handle(BackoffElapsed(), now)
    assert got == expected
    assert m.restarts == len(runs)


def test_immediate_restart_says_so_and_starts_once_dependencies_are_met() -> None:
    m = ServiceMachine(service(probe=False))
    _crash_after(m, 150, 0)
    assert m.reason == "exited with code 1; restart 1 at once"
    assert m.handle(DependenciesMet(), 150) == [StartContainer()]


def test_unhealthy_after_a_long_run_stops_then_restarts_at_once() -> None:
    m = healthy(ServiceMachine(service()), now=1)
    for t in (150, 155, 160):
        actions = m.handle(ProbeFailed("HTTP 500"), t)
    assert actions == [StopContainer("unhealthy (HTTP 500)"), WaitForDependencies()]


def test_start_failure_after_an_immediate_restart_backs_off() -> None:
    # The failed start is not another long run: a broken image must not restart in a tight loop.
    m = ServiceMachine(service(probe=False))
    _crash_after(m, 150, 0)
    m.handle(DependenciesMet(), 150)
    assert m.handle(StartFailed("no such image"), 150) == [ScheduleBackoff(1.0)]


def test_crash_loop_limit_still_applies_to_immediate_restarts() -> None:
    m = ServiceMachine(service("restart: {limit: {count: 1, window: 1h}}\n", probe=False))
    assert _crash_after(m, 150, 0)[0] == [WaitForDependencies()]
    _crash_after(m, 150, 150)  # a second restart within the hour is one too many
    assert m.state is State.FAILED
    assert "crash loop" in m.reason


# --------------------------------------------------------------------------- dependencies verdict


@pytest.mark.parametrize(
    ("states", "verdict"),
    [
        ({}, DependenciesMet()),
        ({"db": State.HEALTHY, "migrate": State.COMPLETED}, DependenciesMet()),
        ({"db": State.STARTING, "migrate": State.COMPLETED}, None),
        ({"db": State.HEALTHY, "migrate": State.RUNNING}, None),
        ({"db": State.FAILED, "migrate": State.COMPLETED}, DependencyFailed("db")),
        ({"db": State.HEALTHY, "migrate": State.BLOCKED}, DependencyFailed("migrate")),
    ],
)
def test_dependencies_verdict(states: dict[str, State], verdict: object) -> None:
    depends_on = {
        name: Dependency(Condition.HEALTHY if name == "db" else Condition.COMPLETED)
        for name in states
    }
    assert dependencies_verdict(depends_on, states.__getitem__) == verdict
