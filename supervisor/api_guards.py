"""The API's defences against hostile clients: a connection cap, time limits for idle and
slow clients, and a `Host` allow-list against DNS rebinding.

A cap alone would let a thousand idle sockets lock everyone out until they time out, so at the
cap the oldest connection that is not in the middle of a request is closed to make room: a
flood of idle or slow-header connections pushes itself out, and `/healthz` still answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from supervisor.config import is_loopback_host
from supervisor.logs import Throttle

log = structlog.get_logger(__name__)

__all__ = ["CappedSite", "ConnectionGuard", "ConnectionLimits", "HostAllowList"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ConnectionLimits:
    """`max_connections` open at once; `header_timeout` for a new connection's first request
    to arrive whole; `idle_timeout` between requests on a kept-alive connection."""

    max_connections: int = 256
    header_timeout: float = 10.0
    idle_timeout: float = 15.0


class ConnectionGuard:
    """The protocol factory the listening socket uses: aiohttp's, within the limits."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self._server: web.Server | None = None
        self._limits = limits
        # Plain sets (aiohttp's handlers take no weak references), pruned to the open ones.
        self._busy: set[RequestHandler] = set()  # handling a request right now
        self._served: set[RequestHandler] = set()  # got at least one request
        self._closing: set[RequestHandler] = set()  # closed by us, not yet gone
        self._throttle = Throttle()
        self.evicted = 0  # connections closed to make room (for the log and tests)
        self.expired = 0  # connections closed for not sending a request in time

    def attach(self, server: web.Server) -> None:
        """The runner's server, once it is set up (the middleware must be in place before)."""
        self._server = server

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Middleware: marks a connection busy while one of its requests is handled."""
        protocol = request.protocol
        self._served.add(protocol)
        self._busy.add(protocol)
        try:
            return await handler(request)
        finally:
            self._busy.discard(protocol)

    def __call__(self) -> asyncio.BaseProtocol:
        assert self._server is not None, "attach() the server first"
        connections = self._server.connections
        live = set(connections)
        self._served &= live
        self._closing &= live
        open_now = [h for h in connections if h not in self._closing]
        if len(open_now) >= self._limits.max_connections:
            idle = next((h for h in open_now if h not in self._busy), None)
            if self._throttle.allow("full") is not None:
                log.warning(
                    "api connection limit reached: closing the oldest idle connections",
                    limit=self._limits.max_connections,
                    closed_so_far=self.evicted,
                )
            if idle is None:
                return _Refused()  # every slot is answering a request: this one waits its turn
            self._close(idle)
            self.evicted += 1
        protocol = self._server()
        loop = asyncio.get_running_loop()
        loop.call_later(self._limits.header_timeout, self._expire, protocol)
        return protocol

    def _expire(self, protocol: RequestHandler) -> None:
        """A connection that has not sent one whole request in time is closed."""
        if self._server is None or protocol in self._served or protocol in self._closing:
            return
        if protocol in self._server.connections:
            self._close(protocol)
            self.expired += 1

    def _close(self, protocol: RequestHandler) -> None:
        self._closing.add(protocol)
        protocol.force_close()


class _Refused(asyncio.Protocol):
    """Closes the connection at once (past the cap, with every connection busy)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class CappedSite(web.BaseSite):
    """A listening socket (bound beforehand) whose connections go through a ConnectionGuard."""

    def __init__(
        self, runner: web.AppRunner, guard: ConnectionGuard, *, name: str, sock: socket.socket
    ) -> None:
        super().__init__(runner)
        self._guard = guard
        self._name = name
        self._sock = sock

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._guard, sock=self._sock, backlog=self._backlog)


class HostAllowList:
    """Which `Host` headers the API answers over TCP: IP literals, loopback names, the listen
    host and the names in `api.allowed_hosts`. A page that rebinds its own name to 127.0.0.1
    still sends that name, so it is refused."""

    def __init__(self, listen_host: str, allowed: Iterable[str]) -> None:
        self._names = {_normal(listen_host), *(_normal(name) for name in allowed)}

    def allows(self, header: str | None) -> bool:
        if header is None:
            return True  # no browser omits it; an HTTP/1.0 tool may
        host = _normal(_strip_port(header))
        if not host:
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host in self._names or is_loopback_host(host)
        return True


def _strip_port(header: str) -> str:
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _normal(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()
