"""Who may use the status API: the bearer token, the Host allow-list, and the token file.

Over TCP, POST needs `Authorization: Bearer <token>` (and, on a non-loopback address, every
request but /healthz does); over the unix socket, the socket file's mode and group are the
gate. Connection limits (how many, how slow) are `api_guards`' concern.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from supervisor.api_contract import ApiError
from supervisor.api_guards import HostAllowList

UNAUTHENTICATED = frozenset({"/healthz"})


@dataclass(frozen=True)
class AccessPolicy:
    """Who may do what: `token` None means mutations over TCP are refused outright."""

    token: str | None
    over_unix: bool
    loopback: bool
    hosts: HostAllowList | None = None  # None: any Host header (tests of the app alone)

    def check(self, request: web.Request) -> None:
        """Raise ApiError unless the request may proceed."""
        if self.over_unix:
            return  # the socket's mode and group already decided who got this far
        host = request.headers.get("Host")
        if self.hosts is not None and not self.hosts.allows(host):
            # DNS rebinding: a web page whose name now points at 127.0.0.1.
            raise ApiError(
                403, f"Host {host!r} is not served here (add it to api.allowed_hosts if it is ours)"
            )
        mutating = request.method not in ("GET", "HEAD", "OPTIONS")
        if not mutating and (self.loopback or request.path in UNAUTHENTICATED):
            return
        if self.token is None:
            raise ApiError(
                403,
                "changes over TCP need a token: set api.token_file in the config "
                "(or listen on a unix socket)",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="ovpn-supervisor"'}
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)", challenge)
        # A header with bytes that are not UTF-8 is a wrong token, not a server error.
        if not hmac.compare_digest(given.strip().encode(errors="replace"), self.token.encode()):
            raise ApiError(401, "wrong token", challenge)


POLICY = web.AppKey("policy", AccessPolicy)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The app's `AccessPolicy` decides before any handler runs."""
    # Unmatched paths go on to their 404/405 without a token check.
    if request.match_info.http_exception is None:
        request.app[POLICY].check(request)
    return await handler(request)
