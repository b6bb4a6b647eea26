"""Engine faults against a private, throwaway dockerd: absent at start-up, restarted while we run.

The daemon under test runs as a process with DOCKER_HOST on the private engine, inside its network
namespace (so its HTTP probes reach the containers); the shared engine is never stopped.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from daemon_process import DaemonProcess, running_daemon, write_config
from private_engine import PrivateEngine, private_engine

pytestmark = pytest.mark.docker

READY_DELAY = 1.0
UP = {"db": "healthy", "migrate": "completed", "app": "healthy"}


def ts(value: str) -> float:
    """Docker's RFC 3339 nanosecond timestamps as epoch seconds."""
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


@pytest.fixture(scope="module")
def engine(stand_in_image: str) -> Iterator[PrivateEngine]:
    """One private engine per module, with the stand-in image; removed completely afterwards."""
    with private_engine(stand_in_image) as started:
        yield started


@pytest.fixture
def private_client(engine: PrivateEngine, project_name: str) -> Iterator[docker.DockerClient]:
    """A client of the (running) private engine; the project's containers go afterwards."""
    if not engine.running:
        engine.start()
    client = engine.client()
    yield client
    if engine.running:
        label: dict[str, str | list[str] | bool] = {
            "label": f"io.ovpn-supervisor.project={project_name}"
        }
        for c in client.containers.list(all=True, filters=label):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        for n in client.networks.list(filters=label):
            with contextlib.suppress(docker.errors.NotFound):
                n.remove()
    client.close()


def small_stack(project: str, image: str, db_interval: str = "500ms") -> dict[str, Any]:
    """db (exec probe) <- migrate (job) <- app (http probe, also on db healthy)."""
    health = {"interval": "500ms", "timeout": "1s", "retries": 2, "start_period": "10s"}
    ready = {"STANDIN_READY_DELAY": str(READY_DELAY)}
    return {
        "version": 1,
        "project": project,
        "defaults": {
            "pull": "never",
            "restart": {"policy": "always", "backoff": {"initial": "100ms", "max": "1s"}},
            "stop": {"timeout": "2s"},
        },
        "networks": {"inner": {}},
        "services": {
            "db": {
                "image": image,
                "environment": ready,
                "networks": ["inner"],
                "health": {**health, "interval": db_interval, "exec": ["pg_isready", "-U", "app"]},
            },
            "migrate": {
                "image": image,
                "type": "job",
                "environment": {"STANDIN_ROLE": "job", "STANDIN_RUN_TIME": "0.3"},
                "networks": ["inner"],
                "depends_on": {"db": "healthy"},
            },
            "app": {
                "image": image,
                "environment": ready,
                "networks": ["inner"],
                "depends_on": {"db": "healthy", "migrate": "completed"},
                "health": {**health, "http": {"port": 8080, "path": "/health"}},
            },
        },
    }


@contextlib.contextmanager
def daemon_for(
    engine: PrivateEngine, tmp_path: Path, project: str, image: str, db_interval: str = "500ms"
) -> Iterator[DaemonProcess]:
    path = write_config(tmp_path, small_stack(project, image, db_interval))
    with running_daemon(path, tmp_path / "daemon.log", engine.env(), engine.wrap) as daemon:
        yield daemon


def state(client: docker.DockerClient, project: str, service: str) -> dict[str, Any]:
    info: dict[str, Any] = client.api.inspect_container(f"{project}-{service}")
    return info


def test_absent_engine_is_waited_for_with_backoff_then_the_stack_starts(
    engine: PrivateEngine,
    private_client: docker.DockerClient,
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
) -> None:
    engine.stop()
    with daemon_for(engine, tmp_path, project_name, stand_in_image) as daemon:

        def waits() -> list[dict[str, Any]]:
            return [r for r in daemon.records() if r.get("event") == "waiting for Docker"]

        daemon.wait_for(lambda: len(waits()) >= 4, timeout=30, what="4 'waiting for Docker'")
        retry_in = [float(r["retry_in"]) for r in waits()]
        assert retry_in[:4] == sorted(retry_in[:4]), retry_in
        assert retry_in[3] > retry_in[0], retry_in
        assert daemon.proc.poll() is None  # it waits, it does not exit
        assert not [r for r in daemon.records() if r.get("event") == "state changed"]

        engine.start()
        daemon.wait_states(UP, timeout=60)
        client = engine.client()
        try:
            db, app = state(client, project_name, "db"), state(client, project_name, "app")
        finally:
            client.close()
        assert ts(db["State"]["StartedAt"]) + READY_DELAY <= ts(app["State"]["StartedAt"])
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0


@pytest.mark.parametrize(
    ("outage", "db_interval"),
    [
        ("brief", "500ms"),
        # The engine stays away for three failed reconnects of the event stream, and db's probe
        # (30 s) cannot notice the outage by itself: only the engine's events and the reconnect's
        # re-inspection tell the daemon that db went down with it.
        ("long", "30s"),
    ],
)
def test_engine_restart_brings_the_stack_back_in_dependency_order(
    engine: PrivateEngine,
    private_client: docker.DockerClient,
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
    outage: str,
    db_interval: str,
) -> None:
    with daemon_for(engine, tmp_path, project_name, stand_in_image, db_interval) as daemon:
        daemon.wait_states(UP, timeout=60)
        first = {s: state(private_client, project_name, s)["State"] for s in UP}
        assert (
            state(private_client, project_name, "app")["HostConfig"]["RestartPolicy"]["Name"]
            == "no"
        )
        private_client.close()

        seen = len(daemon.records())
        engine.stop()  # SIGTERM: the engine stops every container on its way out
        if outage == "long":
            daemon.wait_for(
                lambda: (
                    sum(
                        r.get("event") == "docker event stream broken"
                        for r in daemon.records()[seen:]
                    )
                    >= 3
                ),
                timeout=60,
                what="three failed reconnects of the event stream",
            )
        engine.start()
        client = engine.client()
        try:
            daemon.wait_logged(
                lambda r: str(r.get("event", "")).startswith("docker event stream reconnected"),
                timeout=30,
                what="event stream reconnected",
            )

            def restarted(service: str) -> bool:
                now = state(client, project_name, service)["State"]
                return bool(now["Running"]) and now["StartedAt"] != first[service]["StartedAt"]

            daemon.wait_for(
                lambda: restarted("db") and restarted("app"),
                timeout=60,
                what="db and app running again",
            )
            daemon.wait_states({"db": "healthy", "app": "healthy"}, timeout=60)
            second = {s: state(client, project_name, s)["State"] for s in UP}
        finally:
            client.close()
        # The daemon started them again, not the engine (restart policy `no`).
        started = [
            r["service"] for r in daemon.records()[seen:] if r.get("event") == "container started"
        ]
        assert "db" in started and "app" in started, started
        # The outage is in the event history: lost, then back.
        link = [
            r["data"]["connected"] for r in daemon.records()[seen:] if r.get("kind") == "docker"
        ]
        assert link[:1] == [False] and link[-1:] == [True], link
        # Dependency order with health gating: app only once db was healthy again.
        assert ts(second["db"]["StartedAt"]) + READY_DELAY <= ts(second["app"]["StartedAt"])
        # The completed job is not run again.
        assert second["migrate"]["StartedAt"] == first["migrate"]["StartedAt"]
        assert daemon.states()["migrate"] == "completed"
        assert daemon.proc.poll() is None
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0
