"""Keeping the stack alive on the real engine: crashes, out-of-band changes, health, adoption."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from daemon_process import DaemonProcess, running_daemon, write_config

pytestmark = pytest.mark.docker

FAST_HEALTH = {
    "http": {"port": 8080},
    "interval": "300ms",
    "timeout": "300ms",
    "retries": 2,
    "start_period": "5s",
}


def stack(project: str, image: str, **overrides: dict[str, Any]) -> dict[str, Any]:
    """db (exec probe) <- app (http probe, restart: true on db) ; db <- worker (no probe)."""
    services: dict[str, Any] = {
        "db": {
            "image": image,
            # An exec probe goes through the Engine API: on a loaded 2-core machine that alone
            # can pass 300 ms, and db is never the fault under test here, so give it slack.
            "health": {**FAST_HEALTH, "exec": ["pg_isready"], "http": None, "timeout": "2s"},
        },
        "app": {
            "image": image,
            "health": FAST_HEALTH,
            "depends_on": {"db": {"condition": "healthy", "restart": True}},
        },
        "worker": {"image": image, "depends_on": {"db": "healthy"}},
    }
    services["db"]["health"].pop("http")
    for name, override in overrides.items():
        services[name] = {**services[name], **override}
    return {
        "version": 1,
        "project": project,
        "defaults": {
            "pull": "never",
            "restart": {"policy": "always", "backoff": {"initial": "100ms", "max": "1s"}},
            "stop": {"timeout": "2s"},
        },
        "services": services,
    }


class Containers:
    """Reads the project's containers straight from the engine."""

    def __init__(self, client: docker.DockerClient, project: str) -> None:
        self.client, self.project = client, project

    def inspect(self, service: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self.client.api.inspect_container(f"{self.project}-{service}")
        except docker.errors.NotFound:
            return None
        return info

    def identity(self, service: str) -> tuple[str, str]:
        info = self.inspect(service)
        assert info is not None, service
        return info["Id"], info["State"]["StartedAt"]

    def running_again(self, service: str, before: tuple[str, str]) -> bool:
        info = self.inspect(service)
        return bool(
            info and info["State"]["Running"] and (info["Id"], info["State"]["StartedAt"]) != before
        )


@contextmanager
def healthy_stack(
    tmp_path: Path, project: str, image: str, **overrides: dict[str, Any]
) -> Iterator[DaemonProcess]:
    path = write_config(tmp_path, stack(project, image, **overrides))
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"db": "healthy", "app": "healthy", "worker": "running"}, timeout=60)
        yield daemon


def restarts_logged(daemon: DaemonProcess, service: str) -> list[dict[str, Any]]:
    return [
        r
        for r in daemon.records()
        if r.get("service") == service
        and r.get("new") == "restarting"
        and r.get("old") != "restarting"
    ]


@pytest.mark.parametrize(
    "fault",
    ["kill", "crash", "oom", "docker-stop", "rm-force"],
)
def test_container_fault_is_repaired(
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
    docker_client: docker.DockerClient,
    fault: str,
) -> None:
    containers = Containers(docker_client, project_name)
    # The port closes the moment the process dies: with 2 retries 300 ms apart, a `die` event
    # that a loaded engine sends late loses the race to the probes, and the restart's reason
    # is then "unhealthy". What is under test is the exit's own reason: give the event time.
    app = {"health": {**FAST_HEALTH, "retries": 6}}
    with healthy_stack(tmp_path, project_name, stand_in_image, app=app) as daemon:
        before = containers.identity("app")
        ctr = docker_client.containers.get(f"{project_name}-app")
        if fault == "kill":
            ctr.kill()
        elif fault == "crash":
            ctr.exec_run(["/stand-in-ctl", "crash", "3"])
        elif fault == "oom":
            docker_client.api.update_container(str(ctr.id), mem_limit="32m", memswap_limit="32m")
            ctr.exec_run(["/stand-in-ctl", "oom"])
        elif fault == "docker-stop":
            ctr.stop(timeout=5)
        else:
            ctr.remove(force=True)
        daemon.wait_for(
            lambda: containers.running_again("app", before),
            timeout=30,
            what=f"app running again after {fault}",
        )
        daemon.wait_states({"app": "healthy"}, timeout=30)
        reasons = [r["reason"] for r in restarts_logged(daemon, "app")]
        assert reasons, "a restart was logged"
        expected = {
            "kill": "code 137",
            "crash": "code 3",
            "oom": "OOM",
            "docker-stop": "code 143",
            "rm-force": "code 137",  # the die event comes before the destroy
        }[fault]
        assert expected in reasons[0]
        # The event history has it too (every event is also a log line with its kind).
        kinds = {r.get("kind") for r in daemon.records() if r.get("service") == "app"}
        assert {"oom" if fault == "oom" else "exited", "restart", "state"} <= kinds
        if fault == "rm-force":
            assert containers.identity("app")[0] != before[0]  # recreated
        else:
            assert containers.identity("app")[0] == before[0]  # restarted in place
        # The dependency was not touched.
        assert not restarts_logged(daemon, "db")


@pytest.mark.parametrize(
    ("fault", "detail"),
    [("fail", "HTTP 500"), ("hang", "timed out"), ("stop-http", "")],
)
def test_unhealthy_service_is_restarted(
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
    docker_client: docker.DockerClient,
    fault: str,
    detail: str,
) -> None:
    containers = Containers(docker_client, project_name)
    with healthy_stack(tmp_path, project_name, stand_in_image) as daemon:
        before = containers.identity("app")
        docker_client.containers.get(f"{project_name}-app").exec_run(["/stand-in-ctl", fault])
        record = daemon.wait_logged(
            lambda r: r.get("service") == "app" and r.get("new") == "unhealthy",
            timeout=20,
            what=f"app unhealthy after {fault}",
        )
        assert "2 consecutive probe failures" in record["reason"]
        assert detail in record["reason"]
        failed = [
            r for r in daemon.records() if r.get("kind") == "probe-failed" and r["service"] == "app"
        ]
        assert failed and detail in failed[0]["data"]["detail"]
        daemon.wait_for(
            lambda: containers.running_again("app", before), timeout=30, what="app restarted"
        )
        daemon.wait_states({"app": "healthy"}, timeout=30)
        # Stopped with its stop signal (SIGTERM -> 143), not killed.
        logs = docker_client.containers.get(f"{project_name}-app").logs().decode()
        assert "got SIGTERM" in logs


def test_dependent_with_restart_true_follows_its_dependency(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    containers = Containers(docker_client, project_name)
    with healthy_stack(tmp_path, project_name, stand_in_image) as daemon:
        app_before, worker_before = containers.identity("app"), containers.identity("worker")
        docker_client.containers.get(f"{project_name}-db").kill()
        daemon.wait_for(
            lambda: containers.running_again("app", app_before),
            timeout=30,
            what="app restarted after db",
        )
        daemon.wait_states({"db": "healthy", "app": "healthy"}, timeout=30)
        db_healthy_again = [
            r["timestamp"]
            for r in daemon.records()
            if r.get("service") == "db" and r.get("new") == "healthy"
        ][-1]
        app_restart = next(
            r for r in restarts_logged(daemon, "app") if "dependency db" in r["reason"]
        )
        assert app_restart["timestamp"] >= db_healthy_again
        # Without restart: true the worker stays up.
        assert containers.identity("worker") == worker_before


def test_crash_loop_limit_fails_the_service_loudly(
    tmp_path: Path, project_name: str, stand_in_image: str
) -> None:
    config = stack(
        project_name,
        stand_in_image,
        app={
            "environment": {"STANDIN_CRASH_AFTER": "0", "STANDIN_EXIT_CODE": "4"},
            "health": None,
            "restart": {"limit": {"count": 2, "window": "1m"}},
        },
    )
    config["services"]["app"].pop("health")
    with running_daemon(write_config(tmp_path, config), tmp_path / "daemon.log") as daemon:
        record = daemon.wait_logged(
            lambda r: r.get("service") == "app" and r.get("new") == "failed",
            timeout=60,
            what="app failed",
        )
        assert record["level"] == "error"
        assert "crash loop: 2 restarts" in record["reason"]
        assert len(restarts_logged(daemon, "app")) == 2
        assert daemon.proc.poll() is None


def test_restarted_daemon_adopts_the_running_stack_without_restarts(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    containers = Containers(docker_client, project_name)
    config = stack(project_name, stand_in_image)
    config["services"]["migrate"] = {
        "image": stand_in_image,
        "type": "job",
        "environment": {"STANDIN_ROLE": "job"},
    }
    config["services"]["worker"]["depends_on"] = {"db": "healthy", "migrate": "completed"}
    path = write_config(tmp_path, config)
    first = DaemonProcess(path, tmp_path / "first.log")
    try:
        first.wait_states(
            {"db": "healthy", "app": "healthy", "worker": "running", "migrate": "completed"},
            timeout=60,
        )
        before = {s: containers.identity(s) for s in ("db", "app", "worker", "migrate")}
        first.signal(signal.SIGKILL)
        first.wait_exit(timeout=10)
    finally:
        first.close()
    with running_daemon(path, tmp_path / "second.log") as second:
        second.wait_states(
            {"db": "healthy", "app": "healthy", "worker": "running", "migrate": "completed"},
            timeout=60,
        )
        assert {s: containers.identity(s) for s in before} == before
        assert any(r.get("event") == "completed job adopted" for r in second.records())
        # Supervision resumed: a crash after adoption is repaired.
        docker_client.containers.get(f"{project_name}-app").kill()
        second.wait_for(
            lambda: containers.running_again("app", before["app"]),
            timeout=30,
            what="app restarted after adoption",
        )


def test_changed_config_recreates_and_orphans_are_removed_on_start(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    containers = Containers(docker_client, project_name)
    config = stack(project_name, stand_in_image)
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "first.log") as first:
        first.wait_states({"db": "healthy", "app": "healthy", "worker": "running"}, timeout=60)
        before = {s: containers.identity(s) for s in ("db", "app", "worker")}
        first.signal(signal.SIGKILL)
        first.wait_exit(timeout=10)
    del config["services"]["worker"]
    config["services"]["app"]["environment"] = {"NEW_SETTING": "1"}
    with running_daemon(write_config(tmp_path, config), tmp_path / "second.log") as second:
        second.wait_states({"db": "healthy", "app": "healthy"}, timeout=60)
        assert containers.identity("db") == before["db"]  # adopted
        assert containers.identity("app")[0] != before["app"][0]  # recreated
        second.wait_for(
            lambda: containers.inspect("worker") is None, timeout=30, what="orphan removed"
        )


def test_first_crash_after_a_long_run_restarts_at_once_then_backs_off(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    # A backoff of an hour: any restart within the test is the immediate one.
    config = stack(project_name, stand_in_image)
    config["services"] = {"app": {"image": stand_in_image}}
    config["defaults"]["restart"] = {
        "policy": "always",
        "backoff": {"initial": "1h", "max": "1h"},
        "reset_after": "1s",
    }
    containers = Containers(docker_client, project_name)
    with running_daemon(write_config(tmp_path, config), tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"app": "running"}, timeout=60)
        up_since = time.monotonic()
        # Running for longer than reset_after is the precondition itself, not a stand-in for
        # an event.
        daemon.wait_for(
            lambda: time.monotonic() - up_since > 1.5, timeout=5, what="app up for 1.5s"
        )
        before = containers.identity("app")
        docker_client.containers.get(f"{project_name}-app").kill()
        daemon.wait_for(
            lambda: containers.running_again("app", before),
            timeout=30,
            what="app running again at once after a long run",
        )
        assert "restart 1 at once" in restarts_logged(daemon, "app")[0]["reason"]
        # Killed again right away: a short run, so the backoff applies from this second crash.
        daemon.wait_states({"app": "running"}, timeout=30)
        docker_client.containers.get(f"{project_name}-app").kill()
        record = daemon.wait_logged(
            lambda r: r.get("service") == "app" and "restart 2 in" in str(r.get("reason")),
            timeout=30,
            what="second restart scheduled",
        )
        assert record["new"] == "restarting"
        assert "restart 2 in 3600s" in record["reason"]
