"""The foundation against the real Docker Engine: start order, blocking, stop order, signals."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from daemon_process import (
    DEMO_CONFIG,
    demo_config,
    run_cli,
    running_daemon,
    write_config,
)
from helpers import wait_until

from supervisor.docker_api import DockerRuntime
from supervisor.spec import LABEL_PROJECT

pytestmark = pytest.mark.docker

LONG_RUNNING = {
    "postgres-frontend": "healthy",
    "postgres-ct": "healthy",
    "certtransparency": "healthy",
    "signing": "healthy",
    "frontend": "healthy",
    "nginx": "healthy",
}
JOBS = {
    "signing-init": "completed",
    "certtransparency-migrate": "completed",
    "frontend-migrate": "completed",
}
READY_DELAY = 1.0


def ts(value: str) -> float:
    """Docker's RFC 3339 nanosecond timestamps as epoch seconds."""
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def container_state(client: docker.DockerClient, project: str, service: str) -> dict[str, Any]:
    state: dict[str, Any] = client.api.inspect_container(f"{project}-{service}")["State"]
    return state


def test_demo_stack_starts_in_dependency_order_and_stops_in_reverse(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    config = demo_config(project_name)
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({**LONG_RUNNING, **JOBS}, timeout=90)
        started = {
            name: container_state(docker_client, project_name, name) for name in config["services"]
        }

        # No service started before each dependency met its condition.
        for name, service in config["services"].items():
            for dep, condition in (service.get("depends_on") or {}).items():
                dep_state, own = started[dep], ts(started[name]["StartedAt"])
                if condition == "started":
                    assert ts(dep_state["StartedAt"]) <= own, (name, dep)
                elif condition == "healthy":
                    # The stand-in cannot be healthy before its readiness delay has passed.
                    assert ts(dep_state["StartedAt"]) + READY_DELAY <= own, (name, dep)
                else:
                    assert ts(dep_state["FinishedAt"]) <= own, (name, dep)
                    assert dep_state["ExitCode"] == 0

        # Independent services overlap: none waited for another to be ready. Each one's start
        # was under way (its container created) before any of the others could be ready. Not
        # their start times: the longest chain's root gets a head start (engine_turns, at most
        # MAX_WAIT), and under load the engine takes seconds for the others' starts.
        roots = ["postgres-frontend", "postgres-ct", "signing-init"]
        created = {
            r: ts(docker_client.api.inspect_container(f"{project_name}-{r}")["Created"])
            for r in roots
        }
        for root in roots:
            for other in roots:
                if other != root:
                    ready_earliest = ts(started[other]["StartedAt"]) + READY_DELAY
                    assert created[root] < ready_earliest, (root, other)

        # Containers are labelled, named <project>-<service>, and Docker never restarts them.
        info = docker_client.api.inspect_container(f"{project_name}-signing")
        labels = info["Config"]["Labels"]
        assert labels["io.ovpn-supervisor.project"] == project_name
        assert labels["io.ovpn-supervisor.service"] == "signing"
        assert len(labels["io.ovpn-supervisor.config-hash"]) >= 12
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "no"

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0

    stopped = {
        name: container_state(docker_client, project_name, name) for name in config["services"]
    }
    assert all(not s["Running"] for s in stopped.values())
    # Containers are left in place for their logs.
    assert (
        len(
            docker_client.containers.list(
                all=True, filters={"label": f"io.ovpn-supervisor.project={project_name}"}
            )
        )
        == 9
    )

    # Reverse order, through jobs: a service stopped only after everything that depends on it.
    deps = {n: set((s.get("depends_on") or {}).keys()) for n, s in config["services"].items()}

    def transitive(name: str) -> set[str]:
        out: set[str] = set()
        for d in deps[name]:
            out |= {d} | transitive(d)
        return out

    for name in LONG_RUNNING:
        for dep in transitive(name):
            if dep in LONG_RUNNING:
                assert ts(stopped[dep]["FinishedAt"]) >= ts(stopped[name]["FinishedAt"]), (
                    dep,
                    name,
                )

    # Per-service stop signals: nginx got SIGQUIT (128+3), the others SIGTERM (128+15).
    assert stopped["nginx"]["ExitCode"] == 131
    assert stopped["frontend"]["ExitCode"] == 143


def test_failing_job_blocks_its_dependents_and_the_daemon_keeps_running(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    config = demo_config(
        project_name,
        **{
            "certtransparency-migrate": {
                "environment": {"STANDIN_ROLE": "job", "STANDIN_EXIT_CODE": "3"}
            }
        },
    )
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states(
            {
                "certtransparency-migrate": "failed",
                "certtransparency": "blocked",
                "signing": "blocked",
                "frontend": "blocked",
                "nginx": "blocked",
                "postgres-frontend": "healthy",
                "frontend-migrate": "completed",
            },
            timeout=60,
        )
        record = daemon.wait_logged(
            lambda r: r.get("service") == "signing" and r.get("new") == "blocked",
            timeout=1,
            what="signing blocked",
        )
        assert "certtransparency" in record["reason"]
        failed = daemon.wait_logged(
            lambda r: r.get("service") == "certtransparency-migrate" and r.get("new") == "failed",
            timeout=1,
            what="job failed",
        )
        assert "code 3" in failed["reason"]
        assert failed["level"] == "error"
        # Blocked services never started, and keep no container (one made ahead is removed).
        for blocked in ("certtransparency", "signing", "frontend", "nginx"):

            def gone(name: str = f"{project_name}-{blocked}") -> bool:
                return not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})

            wait_until(
                gone,
                timeout=10,
                message=f"no container left for blocked {blocked}",
            )
        started = {
            r.get("service") for r in daemon.records() if r.get("event") == "container started"
        }
        assert not started & {"certtransparency", "signing", "frontend", "nginx"}, started
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0


@pytest.mark.parametrize(
    ("image", "pull", "expected"),
    [
        ("ovpn-no-such-image:1", "never", "not present locally"),
        # A registry on loopback that refuses connections: the pull fails at once.
        ("127.0.0.1:9/ovpn/nothing:1", "missing", "127.0.0.1:9/ovpn/nothing:1"),
    ],
)
def test_missing_image_fails_the_service_with_a_clear_error(
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
    image: str,
    pull: str,
    expected: str,
) -> None:
    config = demo_config(project_name, signing={"image": image, "pull": pull})
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"signing": "failed", "frontend": "blocked"}, timeout=60)
        record = daemon.wait_logged(
            lambda r: r.get("service") == "signing" and r.get("new") == "failed",
            timeout=1,
            what="signing failed",
        )
        assert image in record["reason"]
        assert expected in record["reason"]
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0


def _small_stack(project: str, **services: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "project": project,
        "defaults": {"pull": "never"},
        "services": services,
    }


def test_sigterm_kills_a_container_that_ignores_it_after_its_timeout(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    config = _small_stack(
        project_name,
        stubborn={
            "image": stand_in_image,
            "environment": {"STANDIN_IGNORE_TERM": "1"},
            "stop": {"timeout": "1s"},
            "health": {"http": {"port": 8080}},
        },
    )
    with running_daemon(write_config(tmp_path, config), tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"stubborn": "healthy"}, timeout=30)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=30) == 0
    state = container_state(docker_client, project_name, "stubborn")
    assert state["ExitCode"] == 137  # SIGKILL after the timeout
    logs = docker_client.containers.get(f"{project_name}-stubborn").logs().decode()
    assert "got SIGTERM (ignored)" in logs


def test_second_sigterm_skips_the_remaining_stop_timeouts(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    config = _small_stack(
        project_name,
        stubborn={
            "image": stand_in_image,
            "environment": {"STANDIN_IGNORE_TERM": "1"},
            "stop": {"timeout": "60s"},
        },
    )
    with running_daemon(write_config(tmp_path, config), tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"stubborn": "running"}, timeout=30)
        daemon.signal(signal.SIGTERM)
        daemon.wait_logged(
            lambda r: r.get("event") == "stopping container", timeout=10, what="stop begun"
        )
        daemon.signal(signal.SIGTERM)
        # Far less than the 60 s stop timeout.
        assert daemon.wait_exit(timeout=20) == 0
    assert container_state(docker_client, project_name, "stubborn")["ExitCode"] == 137


def test_check_rejects_a_cycle_with_exit_78_and_the_key_path(tmp_path: Path) -> None:
    config = _small_stack(
        "cyc",
        a={"image": "x", "depends_on": ["b"]},
        b={"image": "x", "depends_on": ["a"]},
    )
    path = write_config(tmp_path, config)
    proc = run_cli("check", "--config", str(path))
    assert proc.returncode == 78
    assert "services.a.depends_on" in proc.stderr
    assert "a -> b -> a" in proc.stderr


def test_run_refuses_an_invalid_config_with_exit_78(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nproject: p\nservices:\n  a:\n    image: x\n    helth: {}\n")
    proc = run_cli("run", "--config", str(path))
    assert proc.returncode == 78
    assert "services.a.helth" in proc.stderr
    assert "bad.yaml:6" in proc.stderr


def test_check_prints_the_start_plan_with_parallel_levels() -> None:
    proc = run_cli("check", "--config", str(DEMO_CONFIG))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "valid" in lines[0]
    first = next(line for line in lines if line.strip().startswith("1."))
    assert "in parallel" in first
    for name in ("postgres-frontend", "postgres-ct", "signing-init"):
        assert name in first


async def test_the_resync_listing_names_exactly_the_running_containers_of_the_project(
    project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    labels = {LABEL_PROJECT: project_name}
    up = docker_client.containers.run(
        stand_in_image, name=f"{project_name}-up", labels=labels, detach=True
    )
    docker_client.containers.create(stand_in_image, name=f"{project_name}-down", labels=labels)
    runtime = DockerRuntime()
    try:
        assert await runtime.running_container_ids(project_name) == {up.id}
    finally:
        await runtime.close()
