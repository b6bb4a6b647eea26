"""A small real stack (stand-in image) under a real daemon process, with the API on loopback."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon_process import DaemonProcess, free_port, running_daemon, write_config
from helpers import wait_until

TOKEN = "live-test-token-0c1d"
CANARY_ENV = "canary-env-5d8e1f"
CANARY_SECRET = "canary-secret-77ab20"


@dataclass
class LiveApi:
    daemon: DaemonProcess
    base: str  # http://127.0.0.1:PORT
    address: str  # 127.0.0.1:PORT
    config_path: Path
    token_file: Path

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            return json.load(response)

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            text: str = response.read().decode()
            return text

    def wait_all_up(self, timeout: float = 60) -> None:
        wait_until(
            lambda: self.get_json("/v1/status")["daemon"]["all_up"],
            timeout=timeout,
            message=f"stack all up; log:\n{self.daemon.tail()}",
        )


def stack_config(project: str, secret_file: Path, token_file: Path, port: int) -> dict[str, Any]:
    return {
        "version": 1,
        "project": project,
        "api": {"listen": f"127.0.0.1:{port}", "token_file": str(token_file)},
        "defaults": {
            "pull": "never",
            "health": {"interval": "1s", "timeout": "2s", "retries": 2},
            "restart": {"backoff": {"initial": "200ms", "max": "1s"}},
            "stop": {"timeout": "2s"},
        },
        "secrets": {"db_password": {"file": str(secret_file)}},
        "services": {
            "init": {
                "image": "ovpn-stand-in:latest",
                "type": "job",
                "environment": {"STANDIN_ROLE": "job"},
            },
            "web": {
                "image": "ovpn-stand-in:latest",
                "environment": {"STANDIN_PORT": "8080", "API_SECRET_VALUE": CANARY_ENV},
                "secrets": ["db_password"],
                "depends_on": {"init": "completed"},
                "health": {"http": {"port": 8080, "path": "/health"}},
            },
        },
    }


@contextmanager
def live_api(
    tmp_path: Path, project: str, wrap: Callable[[list[str]], list[str]] | None = None
) -> Iterator[LiveApi]:
    """Start the daemon on a small stack (its command line passed through `wrap`, if given);
    stopped (SIGTERM) on exit."""
    secret = tmp_path / "db_password"
    secret.write_text(CANARY_SECRET + "\n")
    token_file = tmp_path / "api_token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    path = write_config(tmp_path, stack_config(project, secret, token_file, port))
    with running_daemon(path, tmp_path / "daemon.log", wrap=wrap) as daemon:
        live = LiveApi(daemon, f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", path, token_file)
        live.wait_all_up()
        yield live
