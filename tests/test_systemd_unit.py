"""The shipped unit, Dockerfile and compose file: systemd-analyze verify/security, hadolint."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

UNIT = REPO_ROOT / "systemd" / "ovpn-supervisor.service"
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "deploy" / "with-docker" / "compose.yaml"
EXPOSURE_LIMIT = 2.5


def tool(name: str) -> str:
    """A test tool's path; scripts/ensure-test-tools and the test extra install them."""
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} not found: run scripts/ensure-test-tools (or pip install -e '.[test]')")


def unit_settings(text: str) -> dict[str, list[str]]:
    """[Service] keys of a unit, each with all its values (units repeat keys)."""
    values: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def verify(unit_text: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` in a root holding the unit, a stub binary and the host's units.

    The root stands in for an installed host: verify checks that ExecStart's binary exists.
    """
    stub = root / "opt" / "ovpn-supervisor" / "bin" / "ovpn-supervisor"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    units = root / "usr" / "lib" / "systemd" / "system"
    host_units = Path("/lib/systemd/system")
    shutil.copytree(host_units, units, symlinks=True)
    if not (units / "docker.service").exists():
        (units / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "systemd" / "system" / UNIT.name).write_text(unit_text)
    return subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = verify(UNIT.read_text(), tmp_path)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy")
    proc = verify(broken, tmp_path)
    assert "notifyy" in proc.stderr, proc.stderr


def test_unit_security_exposure_is_at_most_2_5() -> None:
    proc = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= EXPOSURE_LIMIT, proc.stdout


def test_unit_has_the_wiring_the_daemon_relies_on() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    unit, service = parser["Unit"], unit_settings(UNIT.read_text())
    assert "docker.service" in unit["Requires"] and "docker.service" in unit["After"]
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "Restart": ["on-failure"],
        "RestartPreventExitStatus": ["78"],
        "LimitCORE": ["0"],
        "User": ["ovpn-supervisor"],
        "SupplementaryGroups": ["docker"],
        "CapabilityBoundingSet": [""],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
    }
    for key, value in expected.items():
        assert service.get(key) == value, key
    assert int(service["WatchdogSec"][0].removesuffix("s")) >= 10
    start = shlex.split(service["ExecStart"][0])
    assert start[:2] == ["/opt/ovpn-supervisor/bin/ovpn-supervisor", "run"]
    assert start[start.index("--config") + 1] == "/etc/ovpn-supervisor/supervisor.yaml"
    # Blocking reload (kill -HUP returns before RELOADING=1 arrives).
    reload = shlex.split(service["ExecReload"][0])
    assert reload[:2] == ["/opt/ovpn-supervisor/bin/ovpn-supervisor", "reload"]
    assert "kill" not in service["ExecReload"][0]


@pytest.mark.slow
def test_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run(
        [tool("hadolint"), str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0 and "DL3007" in proc.stdout, proc.stdout


def test_dockerfile_runs_the_same_command_as_the_unit_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(froms) == 2 and all(f.startswith("python:") and "alpine" in f for f in froms)
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.MULTILINE)
    assert "healthz" in text and re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    cmd = yaml.safe_load(re.search(r"^CMD (.+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    unit_start = shlex.split(unit_settings(UNIT.read_text())["ExecStart"][0])
    assert [Path(entry[0]).name, *entry[1:], *cmd] == [Path(unit_start[0]).name, *unit_start[1:]]


def test_compose_file_mounts_socket_and_read_only_config() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["supervisor"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
    assert "/etc/ovpn-supervisor:/etc/ovpn-supervisor:ro" in service["volumes"]
    assert service["network_mode"] == "host"
    assert service["build"]["context"] == "../.."
    assert (COMPOSE.parent / service["build"]["context"] / "Dockerfile").resolve() == DOCKERFILE
