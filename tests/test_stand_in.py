"""The stand-in image's contract, proven against the real Docker Engine (standin/README.md)."""

from __future__ import annotations

import socket
import time

import pytest
from docker.models.containers import Container
from helpers import (
    HttpReply,
    RunStandIn,
    async_wait_until,
    exit_code,
    http_get,
    published_port,
    wait_until,
)

pytestmark = pytest.mark.docker

LOCALHOST = "127.0.0.1"


def health(container: Container, *, timeout: float = 1.0) -> HttpReply:
    """GET /health through the port published on 127.0.0.1."""
    return http_get(LOCALHOST, published_port(container), "/health", timeout=timeout)


def health_status(container: Container) -> int:
    return health(container).status


def wait_healthy(container: Container) -> None:
    wait_until(lambda: health_status(container) == 200, timeout=10, message="/health answers 200")


def wait_exit(container: Container, timeout: float = 10) -> int:
    def exited() -> tuple[int] | None:
        code = exit_code(container)
        return None if code is None else (code,)  # a tuple, so that exit code 0 is truthy

    result = wait_until(exited, timeout=timeout, message=f"{container.name} exits")
    assert result is not None
    return result[0]


def ctl(container: Container, *args: str) -> None:
    result = container.exec_run(["/stand-in-ctl", *args])
    assert result.exit_code == 0, result.output


def logs(container: Container) -> str:
    return container.logs().decode()


def test_readiness_delay_then_healthy(run_stand_in: RunStandIn) -> None:
    c = run_stand_in(env={"STANDIN_READY_DELAY": "1.5"})
    wait_until(lambda: health_status(c) == 503, timeout=5, message="/health answers 503 first")
    started = time.monotonic()
    wait_until(lambda: health_status(c) == 200, timeout=10, message="/health turns 200")
    assert health(c).body == '{"status":"ok"}'
    assert time.monotonic() - started < 3
    assert http_get(LOCALHOST, published_port(c), "/nope").status == 404
    assert "stand-in: service starting" in logs(c)
    wait_until(lambda: "stand-in: ready" in logs(c), timeout=2, message="ready is logged")


def test_pg_isready_follows_readiness(run_stand_in: RunStandIn) -> None:
    c = run_stand_in(env={"STANDIN_READY_DELAY": "1"}, port=None)
    assert c.exec_run(["pg_isready", "-U", "ct_user"]).exit_code == 1
    wait_until(
        lambda: c.exec_run(["pg_isready"]).exit_code == 0, timeout=10, message="pg_isready -> 0"
    )
    ctl(c, "unready")
    assert c.exec_run(["pg_isready"]).exit_code == 1
    ctl(c, "fail")
    assert c.exec_run(["pg_isready"]).exit_code == 2


@pytest.mark.parametrize("code", [0, 3])
def test_job_exits_with_configured_code(run_stand_in: RunStandIn, code: int) -> None:
    c = run_stand_in(
        f"job{code}",
        env={"STANDIN_ROLE": "job", "STANDIN_RUN_TIME": "0.3", "STANDIN_EXIT_CODE": str(code)},
        port=None,
    )
    assert wait_exit(c) == code
    out = logs(c)
    assert "stand-in: job starting" in out
    assert f"stand-in: exiting with code {code}" in out


def test_service_crash_after(run_stand_in: RunStandIn) -> None:
    c = run_stand_in(env={"STANDIN_CRASH_AFTER": "0.5", "STANDIN_EXIT_CODE": "7"}, port=None)
    assert wait_exit(c) == 7


@pytest.mark.parametrize(("signal", "code"), [("SIGTERM", 143), ("SIGUSR1", 138), ("SIGINT", 130)])
def test_stop_signal_is_readable_from_exit_code(
    run_stand_in: RunStandIn, signal: str, code: int
) -> None:
    c = run_stand_in(port=None)
    wait_until(lambda: "ready" in logs(c), timeout=5, message="stand-in ready")
    started = time.monotonic()
    c.kill(signal=signal)
    assert wait_exit(c, timeout=5) == code
    assert time.monotonic() - started < 1.0
    assert f"stand-in: got {signal}" in logs(c)


def test_ignore_term_needs_kill(run_stand_in: RunStandIn) -> None:
    c = run_stand_in(env={"STANDIN_IGNORE_TERM": "1"}, port=None)
    wait_until(lambda: "ready" in logs(c), timeout=5, message="stand-in ready")
    started = time.monotonic()
    c.stop(timeout=1)
    assert exit_code(c) == 137
    assert time.monotonic() - started >= 0.9
    assert "got SIGTERM (ignored)" in logs(c)


def test_ctl_fail_and_ok(run_stand_in: RunStandIn) -> None:
    c = run_stand_in()
    wait_healthy(c)
    ctl(c, "fail")
    assert health(c).status == 500
    ctl(c, "unready")
    assert health(c).status == 503
    ctl(c, "ok")
    assert health(c).status == 200


def test_ctl_hang(run_stand_in: RunStandIn) -> None:
    c = run_stand_in()
    wait_healthy(c)
    ctl(c, "hang")
    with pytest.raises(TimeoutError):
        health(c, timeout=0.5)
    ctl(c, "ok")
    assert health(c).status == 200


def test_ctl_stop_http_refuses_but_keeps_running(run_stand_in: RunStandIn) -> None:
    c = run_stand_in()
    wait_healthy(c)
    ctl(c, "stop-http")
    # Inside the container the port is closed (docker-proxy on the host side would accept).
    result = c.exec_run(["wget", "-q", "-O-", "http://127.0.0.1:8080/health"])
    assert result.exit_code != 0
    assert b"refused" in result.output
    with pytest.raises(OSError):
        health(c)
    c.reload()
    assert c.status == "running"
    ctl(c, "ok")
    wait_healthy(c)


@pytest.mark.parametrize(("args", "code"), [((), 1), (("42",), 42)])
def test_ctl_crash(run_stand_in: RunStandIn, args: tuple[str, ...], code: int) -> None:
    c = run_stand_in(port=None)
    wait_until(lambda: "ready" in logs(c), timeout=5, message="stand-in ready")
    ctl(c, "crash", *args)
    assert wait_exit(c, timeout=5) == code


def test_several_ports_and_tcp_accept(run_stand_in: RunStandIn) -> None:
    c = run_stand_in(env={"STANDIN_PORT": "8080,8443"}, port=8443)
    port = published_port(c, 8443)
    wait_until(
        lambda: http_get(LOCALHOST, port, "/health").status == 200,
        timeout=10,
        message="second port answers",
    )
    with socket.create_connection((LOCALHOST, port), timeout=2):
        pass


def test_wait_until_reports_last_value() -> None:
    with pytest.raises(AssertionError, match=r"the thing.*last value: 0"):
        wait_until(lambda: 0, timeout=0.1, message="the thing")


async def test_async_wait_until_accepts_sync_and_async() -> None:
    calls: list[int] = []

    async def probe() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert await async_wait_until(probe, timeout=2, message="third call") is True
    assert await async_wait_until(lambda: "x", timeout=1, message="sync") == "x"
