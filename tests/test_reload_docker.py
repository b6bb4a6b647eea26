"""Reload against the real engine: only what changed is touched; a bad config changes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import yaml
from daemon_process import DaemonProcess, demo_config, run_cli, running_daemon, write_config

pytestmark = pytest.mark.docker

ALL_UP = {
    "postgres-frontend": "healthy",
    "postgres-ct": "healthy",
    "signing-init": "completed",
    "certtransparency-migrate": "completed",
    "frontend-migrate": "completed",
    "certtransparency": "healthy",
    "signing": "healthy",
    "frontend": "healthy",
    "nginx": "healthy",
}


def identities(client: docker.DockerClient, project: str) -> dict[str, tuple[str, str]]:
    """service -> (container id, StartedAt) for every container of the project."""
    found = client.containers.list(
        all=True, filters={"label": f"io.ovpn-supervisor.project={project}"}
    )
    out = {}
    for c in found:
        info = client.api.inspect_container(str(c.id))
        out[info["Config"]["Labels"]["io.ovpn-supervisor.service"]] = (
            info["Id"],
            info["State"]["StartedAt"],
        )
    return out


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--config", str(config), timeout=120)


def reload(config: Path) -> dict[str, Any]:
    proc = cli("reload", "--json", config=config)
    result: dict[str, Any] = json.loads(proc.stdout)
    assert (proc.returncode == 0) == result["ok"], proc.stderr
    return result


@contextmanager
def demo_stack(
    tmp_path: Path, project: str
) -> Iterator[tuple[DaemonProcess, dict[str, Any], Path]]:
    config = demo_config(project)
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states(ALL_UP, timeout=90)
        yield daemon, config, path


def applied(daemon: DaemonProcess, key: str) -> list[str]:
    """Services named under `key` by every reload applied so far (the file watcher may have
    applied an edit before the explicit reload arrived; then that one finds nothing to do)."""
    names: list[str] = []
    for r in daemon.records():
        if r.get("event") == "reload applied":
            names.extend(r.get(key) or [])
    return names


def rewrite(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_editing_one_service_recreates_exactly_that_container(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    with demo_stack(tmp_path, project_name) as (daemon, config, path):
        before = identities(docker_client, project_name)
        config["services"]["signing"]["environment"]["SIGNING_LOG_LEVEL"] = "debug"
        rewrite(path, config)
        assert reload(path)["ok"]
        assert applied(daemon, "recreated") == ["signing"]
        assert applied(daemon, "added") == applied(daemon, "removed") == []
        daemon.wait_states(ALL_UP, timeout=60)
        after = identities(docker_client, project_name)
        assert after["signing"][0] != before["signing"][0]
        for name in set(before) - {"signing"}:
            assert after[name] == before[name], f"{name} was touched"
        env = docker_client.api.inspect_container(f"{project_name}-signing")["Config"]["Env"]
        assert "SIGNING_LOG_LEVEL=debug" in env


def test_probe_settings_change_touches_no_container(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    with demo_stack(tmp_path, project_name) as (daemon, config, path):
        before = identities(docker_client, project_name)
        config["services"]["frontend"]["health"]["interval"] = "2s"
        rewrite(path, config)
        assert reload(path)["ok"]
        assert applied(daemon, "updated") == ["frontend"]
        assert applied(daemon, "recreated") == []
        assert identities(docker_client, project_name) == before


def test_add_and_remove_a_service(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    with demo_stack(tmp_path, project_name) as (daemon, config, path):
        before = identities(docker_client, project_name)
        del config["services"]["nginx"]
        config["services"]["metrics-exporter"] = {
            "image": stand_in_image,
            "networks": ["backend"],
            "depends_on": {"frontend": "healthy"},
            "health": {"http": {"port": 8080}},
        }
        rewrite(path, config)
        assert reload(path)["ok"]
        assert applied(daemon, "added") == ["metrics-exporter"]
        assert applied(daemon, "removed") == ["nginx"]
        daemon.wait_states({"metrics-exporter": "healthy"}, timeout=60)
        after = identities(docker_client, project_name)
        assert "nginx" not in after
        for name in set(before) - {"nginx"}:
            assert after[name] == before[name], f"{name} was touched"


def test_env_file_change_recreates_that_service(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    env_file = tmp_path / "frontend.env"
    env_file.write_text("FRONTEND_THEME=light\n")
    config = demo_config(project_name)
    config["services"]["frontend"]["env_file"] = [str(env_file)]
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states(ALL_UP, timeout=90)
        before = identities(docker_client, project_name)
        env_file.write_text("FRONTEND_THEME=dark\n")
        # No explicit trigger: the file watcher notices the edit of a referenced file.
        daemon.wait_logged(
            lambda r: r.get("event") == "reload applied", timeout=30, what="reload applied"
        )
        daemon.wait_states(ALL_UP, timeout=60)
        after = identities(docker_client, project_name)
        assert after["frontend"][0] != before["frontend"][0]
        assert {n: after[n] for n in after if n != "frontend"} == {
            n: before[n] for n in before if n != "frontend"
        }
        env = docker_client.api.inspect_container(f"{project_name}-frontend")["Config"]["Env"]
        assert "FRONTEND_THEME=dark" in env


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("broken-yaml", "supervisor.yaml:"),  # file and line
        ("cycle", "dependency cycle"),
        ("unknown-key", "services.signing.helth: unknown key"),
    ],
)
def test_invalid_config_is_refused_and_nothing_restarts(
    tmp_path: Path,
    project_name: str,
    stand_in_image: str,
    docker_client: docker.DockerClient,
    breakage: str,
    expected: str,
) -> None:
    with demo_stack(tmp_path, project_name) as (daemon, config, path):
        before = identities(docker_client, project_name)
        if breakage == "broken-yaml":
            path.write_text(path.read_text() + "\nservices: [unclosed\n")
        elif breakage == "cycle":
            config["services"]["postgres-ct"]["depends_on"] = {"nginx": "started"}
            rewrite(path, config)
        else:
            config["services"]["signing"]["helth"] = {}
            rewrite(path, config)
        result = reload(path)
        assert not result["ok"]
        assert any(expected in error for error in result["errors"]), result["errors"]
        # The refusal is visible in the status the operator reads.
        status = cli("status", "--json", config=path)
        last = json.loads(status.stdout)["daemon"]["last_reload"]
        assert last["ok"] is False
        assert any(expected in error for error in last["errors"])
        assert identities(docker_client, project_name) == before
        assert daemon.states() == ALL_UP


def test_sighup_storm_coalesces_into_few_reloads(
    tmp_path: Path, project_name: str, stand_in_image: str
) -> None:
    with demo_stack(tmp_path, project_name) as (daemon, _config, _path):
        for _ in range(100):
            os.kill(daemon.proc.pid, signal.SIGHUP)
        daemon.wait_logged(
            lambda r: r.get("event") == "reload applied", timeout=30, what="a reload applied"
        )
        # Give a (wrong) second wave of reloads every chance to show up: wait for a marker
        # reload requested after the storm and count what happened before it.
        os.kill(daemon.proc.pid, signal.SIGHUP)
        daemon.wait_for(
            lambda: sum(r.get("event") == "reload applied" for r in daemon.records()) >= 2,
            timeout=30,
            what="the marker reload",
        )
        started = sum(r.get("event") == "reload started" for r in daemon.records())
        assert started <= 4, f"{started} reloads for 101 SIGHUPs"


def test_reload_during_start_is_applied_after_the_start(
    tmp_path: Path, project_name: str, stand_in_image: str, docker_client: docker.DockerClient
) -> None:
    config = demo_config(project_name)
    config["services"]["frontend"]["environment"]["STANDIN_READY_DELAY"] = "3"
    path = write_config(tmp_path, config)
    with running_daemon(path, tmp_path / "daemon.log") as daemon:
        daemon.wait_states({"frontend": "starting"}, timeout=60)
        config["services"]["nginx"]["environment"]["NGINX_WORKERS"] = "2"
        rewrite(path, config)
        assert reload(path)["ok"]
        assert applied(daemon, "recreated") == ["nginx"]
        records = daemon.records()
        frontend_healthy = next(
            i
            for i, r in enumerate(records)
            if r.get("service") == "frontend" and r.get("new") == "healthy"
        )
        applied_at = next(i for i, r in enumerate(records) if r.get("event") == "reload applied")
        assert frontend_healthy < applied_at
        daemon.wait_states(ALL_UP, timeout=60)
        env = docker_client.api.inspect_container(f"{project_name}-nginx")["Config"]["Env"]
        assert "NGINX_WORKERS=2" in env
