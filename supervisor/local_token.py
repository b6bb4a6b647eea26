"""A token for the local CLI when the config names none: made at start-up, kept in /run.

Over TCP every change needs a bearer token. Without `api.token_file` the daemon makes a random
one and writes it where only its own user (and root) can read it, so `ovpn-supervisor reload`
(systemd's ExecReload) and an operator's CLI still work out of the box.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

# systemd's RuntimeDirectory=ovpn-supervisor; the same path for the daemon and the CLI.
DEFAULT_RUNTIME_DIR = "/run/ovpn-supervisor"


def generated_token_path(listen: str) -> Path:
    """Where the daemon listening on `listen` keeps its generated token."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", DEFAULT_RUNTIME_DIR).split(":")[0]
    port = listen.rpartition(":")[2] or "default"
    return Path(runtime) / f"api-{port}.token"


def create_token(path: Path) -> str:
    """Write a fresh random token to `path` (mode 0600) and return it."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    partial = path.with_suffix(".tmp")
    # A fresh file, never one planted there (or a symlink to one) by someone else.
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    partial.replace(path)
    return token


def remove_token(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
