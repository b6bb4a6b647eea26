"""What the benchmark scripts share: ports, timestamps, the daemon's JSON log, cleanup."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import docker
import docker.errors


def compile_package(repo_root: Path) -> None:
    """Write the package's bytecode, as an install does, so a launch reads it as in production.

    The dev venv's install is editable: without this, a launch under PYTHONDONTWRITEBYTECODE
    (set on these machines) compiles every module again, about half a second of start-up.
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(repo_root / "supervisor")],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso_to_epoch(stamp: str) -> float:
    """RFC 3339 (structlog's, or Docker's with nanoseconds) as epoch seconds."""
    head, _, frac = stamp.replace("+00:00", "").rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (anything else skipped)."""
    records = []
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def remove_by_label(api: docker.APIClient, label: str) -> None:
    """Last-resort cleanup of everything a run created (containers, networks, volumes)."""
    for c in api.containers(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(c["Id"], force=True)
    for n in api.networks(filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):
            api.remove_network(n["Id"])
    for v in (api.volumes(filters={"label": label}) or {}).get("Volumes") or []:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_volume(v["Name"])


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for `proc` to exit and return its code, seeing the exit the moment it happens.

    `Popen.wait(timeout=...)` polls, sleeping up to 50 ms between looks: a stop timed with it
    comes out up to 50 ms long. A pidfd becomes readable when the process exits.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return proc.wait()  # already gone and reaped
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(pidfd)
    return proc.wait()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """SIGTERM the daemon and wait; SIGKILL it if it does not go in `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def machine(api: docker.APIClient, *, compose: bool = False) -> dict[str, Any]:
    """Where a benchmark ran: host, CPUs, kernel, engine (and docker-compose), load at the end."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "docker": api.version().get("Version"),
        "python": platform.python_version(),
        "loadavg_at_end": os.getloadavg(),
    }
    if compose:
        version = subprocess.run(["docker-compose", "version", "--short"], capture_output=True,
                                 text=True, check=False)  # fmt: skip
        info["docker_compose"] = version.stdout.strip()
    return info


def write_results(data: dict[str, Any], out: Path, repo_root: Path) -> None:
    """Stamp and write a benchmark's JSON, and say where it went."""
    data["at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nresults: {out.relative_to(repo_root) if out.is_relative_to(repo_root) else out}")


def wait_stack_up(
    base: str, proc: subprocess.Popen[bytes], *, timeout: float, log: Path, every: float = 0.2
) -> None:
    """Poll the daemon at `base` until every service is up; exit with a pointer to its log if
    it does not get there in `timeout` seconds or dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/v1/status", timeout=10) as answer:
                if json.load(answer)["daemon"]["all_up"]:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"the stack did not come up; see {log}")
        time.sleep(every)
