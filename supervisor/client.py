"""The CLI's HTTP client to the running daemon's API, over TCP or its unix socket.

Synchronous (http.client): a CLI call is one request, and this needs no event loop.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config import UNIX_SCHEME


class ClientError(Exception):
    """A request did not get the answer asked for; `str()` is the operator-facing message."""


class DaemonUnreachable(ClientError):
    """Nothing answers at the API address (daemon not running, wrong address, no permission)."""


class ApiRefused(ClientError):
    """The daemon answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass(frozen=True)
class ApiClient:
    """Talks to the daemon at `address` ("host:port" or "unix:///path")."""

    address: str
    token: str | None = None
    timeout: float = 10.0

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        accept: tuple[int, ...] = (200,),
        timeout: float | None = None,
        body: Any = None,
    ) -> Any:
        """The JSON answer for a status in `accept`; ApiRefused or DaemonUnreachable otherwise."""
        conn = self._connection(timeout or self.timeout)
        headers = {"Accept": "application/json"}
        if self.token and method not in ("GET", "HEAD"):
            # Reads need no token: it is shown to the daemon only when it is needed.
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        finally:
            conn.close()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = None
        if response.status in accept:
            return answer
        message = answer.get("message") if isinstance(answer, dict) else None
        raise ApiRefused(response.status, str(message or f"HTTP {response.status}"))

    def stream(self, path: str, headers: dict[str, str] | None = None) -> Iterator[bytes]:
        """The body of a GET as it arrives, in chunks, for as long as the daemon sends it.

        ApiRefused for an error status (before the first chunk), DaemonUnreachable when the
        daemon cannot be reached. Closing the iterator closes the connection.
        """
        conn = self._connection(self.timeout)
        sent = {"Accept": "*/*", **(headers or {})}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        try:
            try:
                conn.request("GET", path, headers=sent)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc) from exc
            if response.status != 200:
                try:
                    message = json.loads(response.read()).get("message")
                except (ValueError, AttributeError, OSError):
                    message = None
                raise ApiRefused(response.status, str(message or f"HTTP {response.status}"))
            if conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet stream is not a dead daemon
            while chunk := response.read1(65536):
                yield chunk
        finally:
            conn.close()

    def _unreachable(self, exc: Exception) -> DaemonUnreachable:
        """What a failed exchange means, for the operator."""
        if isinstance(exc, PermissionError):
            return DaemonUnreachable(
                f"permission denied on {self.address}: run as root or as a member of the "
                "socket's group (api.socket_group)"
            )
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            return DaemonUnreachable(
                f"no daemon is listening on {self.address}: is ovpn-supervisor running? "
                "(address from --api or api.listen in the config)"
            )
        if isinstance(exc, TimeoutError):
            return DaemonUnreachable(f"the daemon at {self.address} did not answer in time")
        return DaemonUnreachable(f"cannot talk to the daemon at {self.address}: {exc}")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.address.startswith(UNIX_SCHEME):
            return _UnixConnection(self.address[len(UNIX_SCHEME) :], timeout)
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit():
            raise DaemonUnreachable(
                f"invalid API address {self.address!r} (use HOST:PORT or unix:///path)"
            )
        return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)


def read_token_file(path: Path) -> str:
    """The token in `path`; ClientError with the reason when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"cannot read token file {path}: {exc}") from exc
