"""`ovpn-supervisor status|start|stop|restart|reload` against a real daemon, and the table."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from daemon_process import free_port, run_cli, running_daemon
from live_api import live_api

from supervisor.model import State
from supervisor.status_table import RESET, render, state_colour

STATUS = {
    "daemon": {
        "state": "running",
        "version": "0.1.0",
        "uptime_seconds": 200.0,
        "config_file": "/etc/x.yaml",
        "config_digest": "abc",
        "docker_connected": True,
        "last_reload": None,
        "summary": "1/2 up; db failed",
        "all_up": False,
    },
    "services": [
        {"name": "web", "type": "service", "state": "healthy", "health": "healthy",
         "up_to_target": True, "reason": "", "since": 940.0, "restarts": 2,
         "last_exit_code": 1, "last_probe": None, "blocked_by": None},
        {"name": "db", "type": "service", "state": "failed", "health": "unknown",
         "up_to_target": False, "reason": "restart limit reached", "since": 900.0,
         "restarts": 10, "last_exit_code": 3, "last_probe": None, "blocked_by": None},
    ],
}  # fmt: skip


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def test_table_is_plain_without_colour_and_coloured_with_it() -> None:
    plain = render(STATUS, colour=False, now=1000.0)
    assert "\033[" not in plain
    lines = plain.splitlines()
    assert lines[0].startswith("ovpn-supervisor 0.1.0 running, up 3m20s; config /etc/x.yaml")
    assert lines[3].split() == ["SERVICE", "STATE", "HEALTH", "UPTIME", "RESTARTS", "LAST", "ERROR"]
    assert lines[4].split() == ["web", "healthy", "healthy", "1m00s", "2", "last", "exit", "1"]
    assert lines[5].split()[:5] == ["db", "failed", "unknown", "-", "10"]
    assert lines[5].endswith("restart limit reached")
    coloured = render(STATUS, colour=True, now=1000.0)
    assert "\033[31mdb" in coloured and RESET in coloured


def test_every_service_state_has_a_colour() -> None:
    # The names come from the daemon's own `State`: a new state cannot go uncoloured.
    assert all(state_colour(state.value) for state in State)
    assert state_colour("from-a-newer-daemon") == ""


@pytest.mark.slow
def test_clear_message_when_no_daemon_listens(tmp_path: Path) -> None:
    result = cli("status", "--api", f"127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert "no daemon is listening on 127.0.0.1:" in result.stderr
    assert "is ovpn-supervisor running?" in result.stderr
    sock = cli("status", "--api", f"unix://{tmp_path}/none.sock")
    assert sock.returncode == 3 and "no daemon is listening" in sock.stderr


@pytest.mark.docker
def test_cli_against_a_live_daemon(tmp_path: Path, project_name: str, stand_in_image: str) -> None:
    with live_api(tmp_path, project_name) as live:
        config = str(live.config_path)
        up = cli("status", "--config", config)
        assert up.returncode == 0, up.stderr
        assert "\033[" not in up.stdout  # not a terminal: no colour
        assert "2/2 up" in up.stdout
        rows = {line.split()[0]: line.split() for line in up.stdout.splitlines()[3:] if line}
        assert rows["web"][1:3] == ["healthy", "healthy"]
        assert rows["init"][1:3] == ["completed", "none"]

        as_json = cli("status", "--json", "--api", live.address)
        assert as_json.returncode == 0
        assert json.loads(as_json.stdout)["daemon"]["all_up"] is True

        wrong = tmp_path / "wrong_token"
        wrong.write_text("not-the-token")
        refused = cli("stop", "web", "--config", config, "--token-file", str(wrong))
        assert refused.returncode == 4
        assert "the daemon refused: wrong token" in refused.stderr
        assert "--token-file" in refused.stderr

        stop = cli("stop", "web", "--config", config)  # token from api.token_file
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.strip() == "stop web: accepted (was healthy)"
        live.daemon.wait_states({"web": "stopped"}, timeout=30)
        down = cli("status", "--config", config)
        assert down.returncode == 1
        assert "web stopped" in down.stdout

        start = cli("start", "web", "--config", config)
        assert start.returncode == 0, start.stderr
        live.wait_all_up(timeout=30)
        assert cli("status", "--config", config).returncode == 0

        unknown = cli("restart", "ghost", "--config", config)
        assert unknown.returncode == 4 and "no service named 'ghost'" in unknown.stderr

        reload = cli("reload", "--config", config)
        assert reload.returncode == 0, reload.stdout + reload.stderr
        assert reload.stdout.startswith("reload applied")
        live.config_path.write_text("version: 1\nproject: [broken\n")
        refused_reload = cli("reload", "--api", live.address, "--token-file", str(live.token_file))
        assert refused_reload.returncode == 1, refused_reload.stdout + refused_reload.stderr
        assert refused_reload.stdout.startswith("reload refused")
        assert "error:" in refused_reload.stdout


@pytest.mark.slow
def test_generated_token_lets_the_local_cli_change_things(
    tmp_path: Path, project_name: str, stand_in_image: str
) -> None:
    """No api.token_file: the daemon makes one in its runtime folder and the CLI finds it."""
    runtime = tmp_path / "run"
    config = {
        "version": 1,
        "project": project_name,
        "api": {"listen": f"127.0.0.1:{free_port()}"},
        "defaults": {"pull": "never"},
        "services": {"svc": {"image": stand_in_image}},
    }
    path = tmp_path / "supervisor.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime)}
    with running_daemon(path, tmp_path / "daemon.log", env=env) as daemon:
        daemon.wait_states({"svc": "running"}, timeout=30)
        token_files = list(runtime.glob("api-*.token"))
        assert len(token_files) == 1
        assert token_files[0].stat().st_mode & 0o777 == 0o600
        proc = run_cli("reload", "--config", str(path), env=env)
        assert proc.returncode == 0, proc.stderr
    assert not list(runtime.glob("api-*.token"))  # taken away with the daemon
