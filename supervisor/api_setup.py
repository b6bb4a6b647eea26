"""What the API needs before the daemon touches Docker: its token and its bound sockets.

No aiohttp here. The daemon binds the API's address first, so a second daemon on the same
address still stops (exit 78) before it starts anything, while the server's imports (aiohttp,
the route modules: a quarter of a second) wait until the first containers are on their way.
"""

from __future__ import annotations

import contextlib
import grp
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.config import ApiConfig

BACKLOG = 128


class ApiSetupError(Exception):
    """The API cannot be served (address in use, unreadable token file, unknown group)."""


@dataclass
class Liveness:
    """Loop lag and Docker reachability, as last measured by `api.watch_liveness`."""

    loop_lag: float = 0.0
    docker_reachable: bool = True


def read_token(path: Path) -> str:
    """The bearer token from its file (surrounding whitespace stripped)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiSetupError(f"api.token_file {str(path)!r}: cannot read it ({exc})") from exc
    if not token:
        raise ApiSetupError(f"api.token_file {str(path)!r} is empty")
    return token


@dataclass
class BoundApi:
    """The API's listening sockets: one unix socket, or one per address the host resolves to."""

    sockets: list[socket.socket]
    unix_path: Path | None = None
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Close the sockets; a unix socket's file goes too (only ever one this daemon bound)."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            sock.close()
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_path.unlink()


def bind_api(config: ApiConfig) -> BoundApi:
    """Bind and listen on `api.listen`; ApiSetupError names the address and the reason."""
    unix = config.unix_path
    if unix is not None:
        return BoundApi([bind_unix_socket(unix, config.socket_mode, config.socket_group)], unix)
    return BoundApi(_bind_tcp(config.listen))


def _bind_tcp(listen: str) -> list[socket.socket]:
    host, _, port = listen.rpartition(":")
    try:
        # Every address the host names, as asyncio's create_server would ("localhost": both).
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ApiSetupError(f"cannot listen on {listen}: {exc.strerror}") from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # "::" must not also take the IPv4 port its own IPv4 socket binds next.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ApiSetupError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _group_id(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ApiSetupError(f"api.socket_group: no group named {group!r}") from None


def bind_unix_socket(path: Path, mode: int, group: str | None) -> socket.socket:
    """A listening unix socket with the given mode and group, never wider open than that."""
    gid = _group_id(group) if group is not None else -1
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ApiSetupError(f"{path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket left by a daemon that died
        else:
            raise ApiSetupError(f"{path}: another daemon is already serving there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind with no permissions at all, then widen to the configured mode: no window in which
    # another user could connect.
    old_umask = os.umask(0o777)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ApiSetupError(f"cannot listen on unix://{path}: {exc.strerror}") from exc
    finally:
        os.umask(old_umask)
    if gid != -1:
        os.chown(path, -1, gid)
    path.chmod(mode)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock
