"""Run `ovpn-supervisor run` as a real process and follow its JSON log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
# The demo topology on the stand-in image (config/demo.yaml runs the real images).
DEMO_CONFIG = REPO_ROOT / "tests" / "fixtures" / "standin-demo.yaml"


def demo_config(project: str, **service_overrides: dict[str, Any]) -> dict[str, Any]:
    """The demo stack as a dict, renamed to `project`, with per-service overrides merged in."""
    config: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    config["project"] = project
    for name, override in service_overrides.items():
        target = config["services"].setdefault(name, {})
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
    return config


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`ovpn-supervisor ARGS…` as a separate process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """Write the config; without an `api` section the daemon gets a free loopback port, so
    daemons of tests running side by side never fight over the default 9180."""
    if "api" not in config:
        token = directory / "api.token"
        token.write_text("test-token-" + os.urandom(8).hex() + "\n")
        token.chmod(0o600)
        config["api"] = {"listen": f"127.0.0.1:{free_port()}", "token_file": str(token)}
    path = directory / "supervisor.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class DaemonProcess:
    """A running daemon; its stderr (JSON lines) goes to a file we parse on demand."""

    def __init__(
        self,
        config_path: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """`env` replaces os.environ; `wrap` prefixes the command line (e.g. to run it inside a
        private engine's network namespace)."""
        self.config_path = config_path
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
        argv = [
            sys.executable,
            "-m",
            "supervisor",
            "run",
            "--config",
            str(config_path),
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ]
        self.proc = subprocess.Popen(
            wrap(argv) if wrap is not None else argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
        )

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def states(self) -> dict[str, str]:
        """Each service's latest state, as logged."""
        current: dict[str, str] = {}
        for r in self.records():
            if r.get("event") == "state changed":
                current[r["service"]] = r["new"]
        return current

    def wait_for(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) waiting for {what}\n{self.tail()}"
                )
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; states {self.states()}\n{self.tail()}"
        )

    def wait_states(self, expected: dict[str, str], *, timeout: float = 60) -> None:
        self.wait_for(
            lambda: all(self.states().get(k) == v for k, v in expected.items()),
            timeout=timeout,
            what=f"states {expected}",
        )

    def wait_logged(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float, what: str
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [r for r in self.records() if predicate(r)]
            return bool(found)

        self.wait_for(check, timeout=timeout, what=what)
        return found[0]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon did not exit within {timeout}s\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


@contextmanager
def running_daemon(
    config_path: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(config_path, log_path, env, wrap)
    try:
        yield daemon
    finally:
        daemon.close()
