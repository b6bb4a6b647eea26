"""End to end under a real systemd: a booted Debian container drives the host's Docker Engine.

The image comes from scripts/build-systemd-image (debootstrap, cached by content key); the
project is installed by scripts/install from wheels built here, without network inside. The
tests run in file order against one booted container: start, status, reload, watchdog, stop,
broken config.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from conftest import REPO_ROOT, remove_project
from helpers import wait_until
from test_systemd import small_stack

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

SYSTEMD_IMAGE = "ovpn-systemd-bookworm:latest"
UNIT = "ovpn-supervisor"
WHEEL_CACHE = Path("/var/tmp/ovpn-e2e-wheels")
DB_READY_DELAY = 3.0
WATCHDOG_SEC = 4  # the shipped unit says 30s; a drop-in shortens it so the test is quick
LONG_RUNNING = ("db", "app")


@dataclass
class SystemdHost:
    """The booted container: run commands in it, read the unit's properties and journal."""

    name: str
    project: str

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["docker", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc

    def write(self, path: str, text: str) -> None:
        subprocess.run(
            ["docker", "exec", "-i", self.name, "sh", "-c", f"cat > {path}"],
            input=text,
            text=True,
            check=True,
            timeout=30,
        )

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.run("journalctl", "--unit", UNIT, "--no-pager", "--output", "cat").stdout


def _wheels(tmp: Path) -> tuple[Path, Path]:
    """Dependency wheels (cached per pyproject.toml) and this tree's own wheel (fresh)."""
    pip = [str(REPO_ROOT / ".venv" / "bin" / "pip"), "wheel", "-q", "--disable-pip-version-check"]
    # Built from a copy: pip builds in the source folder, which other test runs share.
    source = tmp / "project"
    shutil.copytree(REPO_ROOT / "supervisor", source / "supervisor")
    for name in ("pyproject.toml", "README.md"):
        if (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, source / name)
    key = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    deps = WHEEL_CACHE / key
    if not deps.is_dir():
        building = WHEEL_CACHE / f"{key}.{uuid.uuid4().hex[:6]}"
        subprocess.run([*pip, "-w", str(building), str(source)], check=True, timeout=600)
        for own in building.glob("ovpn_supervisor-*.whl"):
            own.unlink()
        building.rename(deps)
    own = tmp / "own"
    subprocess.run([*pip, "--no-deps", "-w", str(own), str(source)], check=True, timeout=300)
    return deps, own


def stack_config(project: str, image: str) -> dict[str, Any]:
    # Changes over TCP need a token; the unit's RuntimeDirectory holds the socket instead.
    api = {"listen": "unix:///run/ovpn-supervisor/api.sock"}
    return small_stack(project, image, db_ready_delay=DB_READY_DELAY, api=api)


@pytest.fixture(scope="module")
def host(
    docker_client: docker.DockerClient,
    stand_in_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SystemdHost]:
    build = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-systemd-image")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"scripts/build-systemd-image failed:\n{build.stdout}{build.stderr}")
    tmp = tmp_path_factory.mktemp("systemd-e2e")
    deps, own = _wheels(tmp)
    src = tmp / "src"
    for part in ("scripts", "systemd", "config"):
        shutil.copytree(REPO_ROOT / part, src / part)

    name = f"ovpn-e2e-{uuid.uuid4().hex[:8]}"
    project = f"t-{uuid.uuid4().hex[:8]}"
    # --privileged fails on these machines; this is the set systemd as PID 1 needs. Host
    # network: the daemon reaches the stack's container addresses as it would on a real host.
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--cap-add", "SYS_ADMIN", "--cgroupns", "private",
         "--tmpfs", "/sys/fs/cgroup", "--tmpfs", "/run", "--tmpfs", "/run/lock",
         "-e", "container=docker", "--stop-signal", "SIGRTMIN+3", "--network", "host",
         "-v", "/var/run/docker.sock:/var/run/docker.sock",
         "-v", f"{deps}:/wheels/deps:ro", "-v", f"{own}:/wheels/own:ro", "-v", f"{src}:/src:ro",
         SYSTEMD_IMAGE],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    h = SystemdHost(name, project)
    try:
        wait_until(
            lambda: (
                h.run("systemctl", "is-system-running", check=False).stdout.strip()
                in ("running", "degraded")
            ),
            timeout=60,
            message="systemd inside the container to finish booting",
        )
        # The engine is the host's, reached through the socket: stand in for its unit.
        h.write(
            "/etc/systemd/system/docker.service",
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
        )
        # Both wheel folders as one local index: pip's --find-links takes one per flag.
        h.run(
            "sh",
            "-c",
            "mkdir -p /wheels/all && cp /wheels/deps/*.whl /wheels/own/*.whl /wheels/all/",
        )
        h.run("/src/scripts/install", "--wheels", "/wheels/all")
        h.write(
            "/etc/ovpn-supervisor/supervisor.yaml",
            yaml.safe_dump(stack_config(project, stand_in_image)),
        )
        h.run("mkdir", "-p", f"/etc/systemd/system/{UNIT}.service.d")
        h.write(
            f"/etc/systemd/system/{UNIT}.service.d/test.conf",
            f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\n",
        )
        h.run("systemctl", "daemon-reload")
        yield h
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
        remove_project(docker_client, project)


def containers(client: docker.DockerClient, project: str) -> dict[str, dict[str, Any]]:
    out = {}
    for c in client.containers.list(
        all=True, filters={"label": f"io.ovpn-supervisor.project={project}"}
    ):
        out[c.labels["io.ovpn-supervisor.service"]] = client.api.inspect_container(str(c.id))
    return out


def finished(container: dict[str, Any]) -> float:
    """FinishedAt (RFC 3339, nanoseconds, trailing zeros trimmed) as epoch seconds."""
    head, _, frac = container["State"]["FinishedAt"].rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def test_start_returns_only_once_the_stack_is_healthy(
    host: SystemdHost, docker_client: docker.DockerClient
) -> None:
    began = time.monotonic()
    host.run("systemctl", "start", UNIT)
    took = time.monotonic() - began
    # READY=1 only at the target: the database's readiness delay is inside the start.
    assert took >= DB_READY_DELAY, took
    assert host.show("StatusText")["StatusText"] == "3/3 up"
    assert host.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
    found = containers(docker_client, host.project)
    assert {n: found[n]["State"]["Running"] for n in LONG_RUNNING} == {"db": True, "app": True}
    assert found["migrate"]["State"]["ExitCode"] == 0
    status = host.run("systemctl", "status", "--no-pager", UNIT).stdout
    assert 'Status: "3/3 up"' in status, status


def reloads(journal: str) -> int:
    """How many reloads the daemon logged as done ("checked" before reloads applied diffs)."""
    return sum(journal.count(f'"event": "reload {word}"') for word in ("applied", "checked"))


def test_reload_returns_after_the_reload_is_applied(host: SystemdHost) -> None:
    before = reloads(host.journal())
    host.run("systemctl", "reload", UNIT)
    # Blocking ExecReload: the daemon's own record is already in the journal on return.
    assert reloads(host.journal()) == before + 1
    props = host.show("ActiveState", "SubState", "StatusText")
    assert props == {"ActiveState": "active", "SubState": "running", "StatusText": "3/3 up"}, props


def test_hung_daemon_is_killed_by_the_watchdog_and_adopts_the_stack(
    host: SystemdHost, docker_client: docker.DockerClient
) -> None:
    before = containers(docker_client, host.project)
    props = host.show("MainPID", "NRestarts")
    host.run("kill", "-STOP", props["MainPID"])
    wait_until(
        lambda: (
            (p := host.show("MainPID", "NRestarts", "ActiveState", "StatusText"))["NRestarts"]
            == str(int(props["NRestarts"]) + 1)
            and p["MainPID"] not in ("0", props["MainPID"])
            and p["ActiveState"] == "active"
            and p["StatusText"] == "3/3 up"
        ),
        timeout=WATCHDOG_SEC * 2 + 40,
        message="watchdog kill, restart and READY of the new daemon",
    )
    journal = host.journal()
    assert f"Watchdog timeout (limit {WATCHDOG_SEC}s)" in journal
    after = containers(docker_client, host.project)
    for name in ("db", "app", "migrate"):
        assert after[name]["Id"] == before[name]["Id"], name
        assert after[name]["State"]["StartedAt"] == before[name]["State"]["StartedAt"], name
    assert journal.count('"event": "container adopted"') >= len(LONG_RUNNING)


def test_stop_stops_the_stack_in_reverse_order_and_ends_inactive(
    host: SystemdHost, docker_client: docker.DockerClient
) -> None:
    host.run("systemctl", "stop", UNIT)
    props = host.show("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    found = containers(docker_client, host.project)
    assert not any(c["State"]["Running"] for c in found.values())
    assert finished(found["app"]) <= finished(found["db"])


def test_broken_config_fails_the_start_with_the_key_path_and_no_restart_loop(
    host: SystemdHost,
) -> None:
    config = yaml.safe_load(host.run("cat", "/etc/ovpn-supervisor/supervisor.yaml").stdout)
    config["services"]["app"]["health"]["interval"] = "often"
    host.write("/etc/ovpn-supervisor/supervisor.yaml", yaml.safe_dump(config))
    restarts = host.show("NRestarts")["NRestarts"]
    assert host.run("systemctl", "start", UNIT, check=False).returncode != 0
    assert "services.app.health.interval: invalid duration 'often'" in host.journal()
    props = host.show("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78"}, props
    # No restart loop: over twice the unit's RestartSec, nothing is scheduled or started.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = host.show("ActiveState", "NRestarts")
        assert now == {"ActiveState": "failed", "NRestarts": restarts}, now
