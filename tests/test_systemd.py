"""sd_notify: what the daemon tells systemd, read from a real AF_UNIX datagram socket."""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_process import running_daemon, write_config

from supervisor.config import ConfigError, ServiceType, parse_config
from supervisor.daemon import ReloadResult, Supervisor
from supervisor.daemon_lifecycle import EngineReached
from supervisor.probes import ProbeResult
from supervisor.service import State
from supervisor.status import ServiceStatus
from supervisor.systemd import (
    EXTEND_EVERY,
    WAITING_FOR_DOCKER,
    SdNotifier,
    SupervisionProgress,
    SystemdNotifier,
    watchdog_interval,
)

# --------------------------------------------------------------------------- a notify socket


@dataclass
class NotifySocket:
    """A bound datagram socket standing in for systemd's; collects (monotonic time, message)."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.messages]

    def timed(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def fields(self) -> list[dict[str, str]]:
        """Each datagram as KEY -> VALUE."""
        return [dict(line.split("=", 1) for line in m.splitlines()) for m in self.received()]

    def wait_for(self, key: str, value: str | None = None, *, timeout: float) -> dict[str, str]:
        """The first datagram that sets `key` (to `value`), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for f in self.fields():
                if key in f and (value is None or f[key] == value):
                    return f
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value} in {timeout}s; got {self.received()}")


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    collected = NotifySocket(path)
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            with collected._lock:
                collected.messages.append((time.monotonic(), data.decode()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    yield collected
    done.set()
    reader.join(timeout=5)
    sock.close()


# --------------------------------------------------------------------------- in-process fakes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status(
    name: str, state: State, *, kind: ServiceType = ServiceType.SERVICE, probe: bool = True
) -> ServiceStatus:
    return ServiceStatus(
        name=name,
        type=kind,
        image="img",
        state=state,
        reason="",
        since=0.0,
        container_id=None,
        restarts=0,
        last_exit_code=None,
        last_probe=None,
        has_probe=probe,
        blocked_by=None,
        operator_stopped=False,
        environment_keys=(),
    )


class FakeStack:
    def __init__(self, *statuses: ServiceStatus) -> None:
        self.current = list(statuses)
        self.runners = {s.name: None for s in statuses}

    def statuses(self) -> list[ServiceStatus]:
        return list(self.current)

    def target_reached(self) -> bool:
        return all(s.up_to_target for s in self.current)


CONFIG = """
version: 1
project: t
systemd: {startup_timeout: 60s}
services:
  db: {image: img, health: {exec: [pg_isready]}, restart: {policy: always}}
  web:
    image: img
    health: {http: {port: 80}, interval: 10s, timeout: 2s}
"""


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def notify(self, message: str) -> None:
        self.sent.append(message)


def make_notifier(
    tmp_path: Path, *, watchdog: float | None = None
) -> tuple[SystemdNotifier, Supervisor, Recorder, FakeClock]:
    path = tmp_path / "supervisor.yaml"
    path.write_text(CONFIG)
    config = parse_config(CONFIG, source=path)
    supervisor = Supervisor(path, config, runtime=None)  # type: ignore[arg-type]
    clock, recorder = FakeClock(), Recorder()
    sd = SystemdNotifier(
        supervisor,
        recorder,
        startup_timeout=config.systemd.startup_timeout,
        watchdog=watchdog,
        clock=clock,
    )
    supervisor.observers.add(sd)
    return sd, supervisor, recorder, clock


def start_stack(supervisor: Supervisor, *statuses: ServiceStatus) -> FakeStack:
    stack = FakeStack(*statuses)
    supervisor.stack = stack  # type: ignore[assignment]
    supervisor.advance(EngineReached())
    return stack


async def reload(supervisor: Supervisor) -> ReloadResult:
    """One reload through the daemon's reload queue, served for just this call."""
    async with supervisor.reloading():
        return await supervisor.reload()


# --------------------------------------------------------------------------- unit tests


def test_no_notify_socket_is_a_silent_no_op() -> None:
    notifier = SdNotifier({})
    assert not notifier.enabled
    notifier.notify("READY=1")  # nothing to send to, nothing raised


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_waiting_for_docker_status_then_extend_timeout_while_starting(tmp_path: Path) -> None:
    sd, _, sent, clock = make_notifier(tmp_path)
    sd.tick()
    assert sent.sent == [f"STATUS={WAITING_FOR_DOCKER}", "EXTEND_TIMEOUT_USEC=30000000"]
    clock.now += EXTEND_EVERY - 1
    sd.tick()
    assert len(sent.sent) == 2  # nothing new: not due yet, status unchanged
    clock.now += 1
    sd.tick()
    assert sent.sent[-1] == "EXTEND_TIMEOUT_USEC=30000000"


def test_ready_only_once_the_target_is_reached_with_the_summary(tmp_path: Path) -> None:
    sd, supervisor, sent, _ = make_notifier(tmp_path)
    stack = start_stack(supervisor, status("db", State.HEALTHY), status("web", State.STARTING))
    supervisor.observers.service_changed(stack.current[1], State.PENDING)
    assert not any("READY=1" in m for m in sent.sent)
    assert sent.sent[-1] == "STATUS=1/2 up; web starting"
    stack.current[1] = status("web", State.HEALTHY)
    supervisor.observers.service_changed(stack.current[1], State.STARTING)
    assert sent.sent[-1] == "READY=1\nSTATUS=2/2 up"
    assert sd.ready
    # A later problem changes STATUS only; READY is never repeated.
    stack.current[0] = status("db", State.RESTARTING)
    supervisor.observers.service_changed(stack.current[0], State.HEALTHY)
    assert sent.sent[-1].startswith("STATUS=1/2 up; db restarting")
    assert sum("READY=1" in m for m in sent.sent) == 1


def test_ready_waits_for_a_component_still_coming_up(tmp_path: Path) -> None:
    _, supervisor, sent, _ = make_notifier(tmp_path)
    supervisor.coming_up.add("api")  # the API server, imported while the first containers start
    stack = start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    supervisor.observers.service_changed(stack.current[1], State.STARTING)
    assert not any("READY=1" in m for m in sent.sent)
    supervisor.came_up("api")
    assert sent.sent[-1] == "READY=1\nSTATUS=2/2 up"


def test_startup_deadline_sends_ready_with_a_degraded_status(tmp_path: Path) -> None:
    sd, supervisor, sent, clock = make_notifier(tmp_path)
    start_stack(supervisor, status("db", State.HEALTHY), status("web", State.UNHEALTHY))
    sd.tick()
    assert not sd.ready
    clock.now += 60
    sd.tick()
    assert sent.sent[-1] == "READY=1\nSTATUS=degraded: 1/2 up; web unhealthy"
    extends = sum(m.startswith("EXTEND_TIMEOUT_USEC") for m in sent.sent)
    clock.now += EXTEND_EVERY * 3
    sd.tick()
    assert sum(m.startswith("EXTEND_TIMEOUT_USEC") for m in sent.sent) == extends


def test_startup_timeout_config_key_and_its_errors() -> None:
    assert parse_config("version: 1\nproject: x\n").systemd.startup_timeout == 300.0
    config = parse_config("version: 1\nproject: x\nsystemd: {startup_timeout: 90s}\n")
    assert config.systemd.startup_timeout == 90.0
    with pytest.raises(ConfigError) as caught:
        parse_config("version: 1\nproject: x\nsystemd: {startup_timeout: 0s, grace: 1s}\n")
    problems = [str(p) for p in caught.value.problems]
    assert any("systemd.grace" in p and "unknown key" in p for p in problems), problems
    assert any("systemd.startup_timeout" in p for p in problems), problems


def test_watchdog_pinged_at_its_interval_while_probes_keep_coming(tmp_path: Path) -> None:
    sd, supervisor, sent, clock = make_notifier(tmp_path, watchdog=5.0)
    stack = start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    for s in stack.current:
        supervisor.observers.service_changed(s, State.STARTING)
    sd.tick()
    assert sent.sent.count("WATCHDOG=1") == 1
    assert sd.next_wake() == pytest.approx(1.0)  # STATUS is re-derived each second
    clock.now += 4.9
    sd.tick()
    assert sent.sent.count("WATCHDOG=1") == 1
    clock.now += 0.1
    sd.tick()
    assert sent.sent.count("WATCHDOG=1") == 2


def test_watchdog_starves_when_a_due_probe_never_reports(tmp_path: Path) -> None:
    sd, supervisor, sent, clock = make_notifier(tmp_path, watchdog=5.0)
    stack = start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    for s in stack.current:
        supervisor.observers.service_changed(s, State.STARTING)
    # web: interval 10s + timeout 2s -> limit 2 * 12 + 5 = 29s; db keeps reporting.
    probe = ProbeResult(True, "HTTP 200", 0.01, 0.0, 200)
    for _ in range(6):
        clock.now += 5
        supervisor.observers.probe_done("db", probe)
        sd.tick()
    assert sd.progress.stalled() is not None and "web" in sd.progress.stalled()  # type: ignore[operator]
    pings = sent.sent.count("WATCHDOG=1")
    clock.now += 5
    sd.tick()
    assert sent.sent.count("WATCHDOG=1") == pings
    # Progress again: pings resume.
    supervisor.observers.probe_done("web", probe)
    sd.tick()
    assert sent.sent.count("WATCHDOG=1") == pings + 1


def test_progress_ignores_services_that_are_not_probed(tmp_path: Path) -> None:
    _, supervisor, _, clock = make_notifier(tmp_path)
    progress = SupervisionProgress(supervisor, clock)
    progress.service_changed(status("db", State.FAILED), State.RESTARTING)
    progress.service_changed(status("web", State.RUNNING, probe=False), State.PENDING)
    clock.now += 3600
    assert progress.stalled() is None


async def test_reload_sends_reloading_with_monotonic_usec_then_ready(tmp_path: Path) -> None:
    sd, supervisor, sent, _ = make_notifier(tmp_path)
    start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    sd.refresh()
    assert sd.ready
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    result = await reload(supervisor)
    assert result.ok
    reloading, ready = sent.sent[-2:]
    lines = dict(line.split("=", 1) for line in reloading.splitlines())
    assert lines["RELOADING"] == "1"
    assert before <= int(lines["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert ready == "READY=1\nSTATUS=2/2 up"


async def test_refused_reload_says_why_in_status(tmp_path: Path) -> None:
    sd, supervisor, sent, _ = make_notifier(tmp_path)
    start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    sd.refresh()
    supervisor.config_path.write_text(CONFIG.replace("interval: 10s", "interval: often"))
    result = await reload(supervisor)
    assert not result.ok
    assert sent.sent[-1].startswith("READY=1\nSTATUS=reload refused (")
    assert "services.web.health.interval" in sent.sent[-1]


async def test_reload_before_ready_is_not_reported_to_systemd(tmp_path: Path) -> None:
    _, supervisor, sent, _ = make_notifier(tmp_path)
    start_stack(supervisor, status("db", State.STARTING), status("web", State.PENDING))
    await reload(supervisor)
    assert not any("RELOADING" in m or "READY" in m for m in sent.sent)


def test_stopping_sent_once_and_nothing_after(tmp_path: Path) -> None:
    sd, supervisor, sent, _ = make_notifier(tmp_path)
    stack = start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    supervisor.observers.stack_stopping()
    supervisor.observers.stack_stopping()
    stack.current[0] = status("db", State.STOPPING)
    supervisor.observers.service_changed(stack.current[0], State.HEALTHY)
    sd.tick()
    assert sent.sent.count("STOPPING=1\nSTATUS=stopping") == 1
    assert sent.sent[-1] == "STOPPING=1\nSTATUS=stopping"


# --------------------------------------------------------------------------- the real daemon


def small_stack(
    project: str, image: str, *, db_ready_delay: float = 1.5, **top_level: Any
) -> dict[str, Any]:
    """db (healthy after a delay) -> migrate (job) -> app (HTTP probe), with stand-ins."""
    return {
        "version": 1,
        "project": project,
        **top_level,
        "defaults": {"pull": "never", "stop": {"timeout": "5s"}},
        "services": {
            "db": {
                "image": image,
                "environment": {"STANDIN_READY_DELAY": str(db_ready_delay)},
                "health": {"exec": ["pg_isready"], "interval": "1s"},
            },
            "migrate": {
                "image": image,
                "type": "job",
                "environment": {"STANDIN_ROLE": "job", "STANDIN_RUN_TIME": "0.3"},
                "depends_on": {"db": "healthy"},
            },
            "app": {
                "image": image,
                "depends_on": {"migrate": "completed"},
                "health": {"http": {"port": 8080}, "interval": "1s"},
            },
        },
    }


@pytest.mark.docker
def test_daemon_tells_systemd_ready_status_watchdog_and_stopping(
    tmp_path: Path,
    notify_socket: NotifySocket,
    project_name: str,
    stand_in_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a ping every 0.5s
    path = write_config(tmp_path, small_stack(project_name, stand_in_image))
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        ready = notify_socket.wait_for("READY", "1", timeout=60)
        assert ready["STATUS"] == "3/3 up"
        states = daemon.states()
        assert states == {"db": "healthy", "migrate": "completed", "app": "healthy"}, states
        before_ready = notify_socket.received()[
            : notify_socket.received().index("READY=1\nSTATUS=3/3 up")
        ]
        assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in before_ready)
        assert any("STATUS=" in m and "up;" in m for m in before_ready)  # progress shown

        # Watchdog pings keep coming at about half of WATCHDOG_USEC.
        start = time.monotonic()
        count = len([m for m in notify_socket.received() if m == "WATCHDOG=1"])
        daemon.wait_for(
            lambda: notify_socket.received().count("WATCHDOG=1") >= count + 4,
            timeout=10,
            what="four more watchdog pings",
        )
        pings = [t for t, m in notify_socket.timed() if m == "WATCHDOG=1" and t >= start]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert gaps and all(0.3 < g < 1.0 for g in gaps), gaps

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0
    stopping = notify_socket.wait_for("STOPPING", "1", timeout=1)
    assert stopping["STATUS"] == "stopping"
    assert notify_socket.received().count("READY=1\nSTATUS=3/3 up") == 1


@pytest.mark.docker
def test_daemon_without_docker_says_so_and_is_ready_degraded_after_the_deadline(
    tmp_path: Path,
    notify_socket: NotifySocket,
    project_name: str,
    stand_in_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    config = small_stack(project_name, stand_in_image, systemd={"startup_timeout": "2s"})
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        notify_socket.wait_for("STATUS", WAITING_FOR_DOCKER, timeout=20)
        ready = notify_socket.wait_for("READY", "1", timeout=20)
        assert ready["STATUS"] == f"degraded: {WAITING_FOR_DOCKER}"
        first = notify_socket.timed()[0][0]
        at = next(t for t, m in notify_socket.timed() if m.startswith("READY=1"))
        assert 1.5 < at - first < 10
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=30) == 0
    assert "STOPPING=1\nSTATUS=stopping" in notify_socket.received()
