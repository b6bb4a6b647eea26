"""Compose import against the real engine: the VPN-Manager-shaped file comes up in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from conftest import REPO_ROOT
from daemon_process import free_port, running_daemon, write_config

pytestmark = pytest.mark.docker

COMPOSE = REPO_ROOT / "tests" / "fixtures" / "compose" / "vpn-manager" / "docker-compose.yml"
# The stand-in plays every image of the stack, under the VPN Manager's own names.
VPN_IMAGES = [
    "ghcr.io/openvpn-manager/postgres:16-alpine",
    "ghcr.io/openvpn-manager/signing:latest",
    "ghcr.io/openvpn-manager/certtransparency:latest",
    "ghcr.io/openvpn-manager/frontend:latest",
    "ghcr.io/openvpn-manager/nginx:latest",
]
READY_DELAY = 1.0


@pytest.fixture(scope="module")
def vpn_images(stand_in_image: str) -> list[str]:
    proc = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-stand-in-image"), *VPN_IMAGES],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return VPN_IMAGES


def ts(value: str) -> float:
    """Docker's RFC 3339 nanosecond timestamps as epoch seconds."""
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def import_compose(project: str, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor",
            "import-compose",
            str(COMPOSE),
            "-o",
            str(output),
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PROJECT_NAME": project},
        timeout=60,
        check=False,
    )


def test_imported_vpn_manager_compose_stack_comes_up_healthy_in_dependency_order(
    tmp_path: Path,
    project_name: str,
    vpn_images: list[str],
    docker_client: docker.DockerClient,
) -> None:
    output = tmp_path / "supervisor.yaml"
    proc = import_compose(project_name, output)
    assert proc.returncode == 0, proc.stderr
    assert "native http probe" in proc.stderr
    config: dict[str, Any] = yaml.safe_load(output.read_text())
    assert config["project"] == project_name
    write_config(tmp_path, config)  # adds an API address of its own (a free loopback port)
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())

    expected = {
        **{n: "healthy" for n in ("postgres-frontend", "postgres-ct", "certtransparency")},
        **{n: "healthy" for n in ("signing", "frontend", "nginx")},
        **{n: "completed" for n in ("signing-init", "certtransparency-migrate")},
        "frontend-migrate": "completed",
    }
    with running_daemon(output, tmp_path / "daemon.log") as daemon:
        daemon.wait_states(expected, timeout=90)
        states = {
            name: docker_client.api.inspect_container(f"{project_name}-{name}")["State"]
            for name in expected
        }
        # Every dependency met its Compose condition before its dependent started.
        for name, body in compose["services"].items():
            deps = body.get("depends_on") or {}
            for dep in deps:
                condition = deps[dep]["condition"] if isinstance(deps, dict) else "service_started"
                own, other = ts(states[name]["StartedAt"]), states[dep]
                if condition == "service_completed_successfully":
                    assert ts(other["FinishedAt"]) <= own, (name, dep)
                    assert other["ExitCode"] == 0
                elif condition == "service_healthy":
                    assert ts(other["StartedAt"]) + READY_DELAY <= own, (name, dep)
                else:
                    assert ts(other["StartedAt"]) <= own, (name, dep)

        # The images ran under the VPN Manager's names, pulled from nowhere (policy missing).
        frontend = docker_client.api.inspect_container(f"{project_name}-frontend")
        assert frontend["Config"]["Image"] == "ghcr.io/openvpn-manager/frontend:latest"
        assert not any(r.get("event") == "pulling image" for r in daemon.records())
        # File-backed secrets, env files, named volumes and the internal database network.
        mounts = {m["Destination"]: m for m in frontend["Mounts"]}
        assert mounts["/run/secrets/frontend_secret_key"]["RW"] is False
        assert (
            "DATABASE_URL=postgresql://frontend@postgres-frontend/frontend"
            in (frontend["Config"]["Env"])
        )
        pg = docker_client.api.inspect_container(f"{project_name}-postgres-ct")
        assert {m["Name"] for m in pg["Mounts"] if m["Type"] == "volume"} == {
            f"{project_name}_pgdata-ct"  # Compose's name, kept
        }
        assert docker_client.networks.get(f"{project_name}-database-net").attrs["Internal"]
        signing = docker_client.api.inspect_container(f"{project_name}-signing")
        assert signing["Config"]["User"] == "1000"
        assert {m["Destination"]: m["RW"] for m in signing["Mounts"]}["/pki"] is False

        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0
    # Compose's stop_signal: SIGQUIT (128+3) for nginx, SIGINT (128+2) for PostgreSQL.
    nginx = docker_client.api.inspect_container(f"{project_name}-nginx")["State"]
    assert nginx["ExitCode"] == 131
    assert (
        docker_client.api.inspect_container(f"{project_name}-postgres-ct")["State"]["ExitCode"]
        == 130
    )


def test_run_accepts_a_compose_file_directly(
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        yaml.safe_dump(
            {
                "name": "${PROJECT}",
                "x-ovpn-supervisor": {"api": {"listen": f"127.0.0.1:{free_port()}"}},
                "services": {
                    "migrate": {
                        "image": stand_in_image,
                        "pull_policy": "never",
                        "restart": "no",
                        "environment": {"STANDIN_ROLE": "job"},
                    },
                    "web": {
                        "image": stand_in_image,
                        "pull_policy": "never",
                        "environment": ["STANDIN_PORT=${WEB_PORT:-8080}"],
                        "depends_on": {"migrate": {"condition": "service_completed_successfully"}},
                        "healthcheck": {"test": "wget -q -O- http://localhost:8080/health"},
                    },
                },
            }
        )
    )
    monkeypatch.setenv("PROJECT", project_name)
    with running_daemon(compose, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"migrate": "completed", "web": "healthy"}, timeout=60)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0


def test_pull_failure_with_restart_always_fails_once_and_is_not_retried(
    tmp_path: Path, project_name: str, stand_in_image: str
) -> None:
    # A registry on loopback that refuses connections: the pull fails at once.
    image = "127.0.0.1:9/openvpn-manager/frontend:latest"
    config = {
        "version": 1,
        "project": project_name,
        "services": {
            "frontend": {"image": image, "pull": "missing", "restart": {"policy": "always"}},
            "witness": {
                "image": stand_in_image,
                "pull": "never",
                "environment": {"STANDIN_READY_DELAY": "1"},
                "health": {"http": {"port": 8080}},
            },
        },
    }
    with running_daemon(write_config(tmp_path, config), tmp_path / "daemon.log") as daemon:
        # The witness needs over a second to turn healthy: time enough for a retry loop to show.
        daemon.wait_states({"frontend": "failed", "witness": "healthy"}, timeout=60)
        failed = daemon.wait_logged(
            lambda r: r.get("service") == "frontend" and r.get("new") == "failed",
            timeout=1,
            what="frontend failed",
        )
        assert image in failed["reason"]
        assert "connection refused" in failed["reason"].lower()
        assert failed["level"] == "error"
        pulls = [
            r for r in daemon.records() if r.get("event") == "pulling image" and r["image"] == image
        ]
        assert len(pulls) == 1
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0


def test_named_networks_are_created_or_joined_under_their_name_and_down_keeps_foreign_ones(
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
    docker_client: docker.DockerClient,
) -> None:
    # Compose's `networks.X.name`: a fixed Docker name. One the stack creates, one it finds.
    fixed, foreign = f"{project_name}-fixed", f"{project_name}-foreign"
    docker_client.networks.create(foreign, driver="bridge")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        yaml.safe_dump(
            {
                "name": project_name,
                "x-ovpn-supervisor": {"api": {"listen": f"127.0.0.1:{free_port()}"}},
                "networks": {"default": {"name": fixed}, "shared": {"name": foreign}},
                "services": {
                    "web": {
                        "image": stand_in_image,
                        "pull_policy": "never",
                        "networks": ["default", "shared"],
                        "healthcheck": {"test": "wget -q -O- http://localhost:8080/health"},
                    },
                },
            }
        )
    )
    with running_daemon(compose, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"web": "healthy"}, timeout=60)
        attached = docker_client.api.inspect_container(f"{project_name}-web")["NetworkSettings"]
        assert set(attached["Networks"]) == {fixed, foreign}
        created = docker_client.networks.get(fixed)
        assert created.attrs["Labels"]["io.ovpn-supervisor.project"] == project_name
        assert not (docker_client.networks.get(foreign).attrs["Labels"] or {})
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(timeout=60) == 0
    down = subprocess.run(
        [sys.executable, "-m", "supervisor", "down", "--config", str(compose)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    names = {n.name for n in docker_client.networks.list(names=[project_name])}
    assert fixed not in names  # the stack's own network goes with it
    assert foreign in names  # another stack's network stays
