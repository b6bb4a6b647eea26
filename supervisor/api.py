"""The local status API: the aiohttp app's wiring, and the daemon component that serves it.

The parts: `api_access` (who may call), `api_handlers` and the other `api_*` route modules
(what they answer), `api_contract` (every answer's JSON shape, whence the OpenAPI document),
`api_guards` (connection limits). Here: the app is put together, bound to its socket and served
beside the stack. Every 4xx is JSON, and an unexpected failure is a JSON 500 plus a log line,
never a traceback to the client. Answers carry environment keys only, never values or secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from supervisor.api_access import POLICY, AccessPolicy, check_access
from supervisor.api_contract import ApiError, error_json
from supervisor.api_events import add_event_routes
from supervisor.api_guards import CappedSite, ConnectionGuard, ConnectionLimits, HostAllowList
from supervisor.api_handlers import (
    LIVENESS,
    METRICS,
    SCRAPES,
    SERVICE_TEXTS,
    SERVICES_PART,
    SUPERVISOR,
    ScrapeCache,
    SupervisorView,
    add_routes,
    services_of,
)
from supervisor.api_logs import add_log_routes, containers_of
from supervisor.api_setup import ApiSetupError, BoundApi, Liveness, bind_api
from supervisor.api_updates import add_routes as add_update_routes
from supervisor.config import ApiConfig
from supervisor.daemon import Supervisor
from supervisor.metrics import SupervisorMetrics
from supervisor.status_page import add_status_page

__all__ = [
    "GUARD",
    "SCRAPES",
    "AccessPolicy",
    "ApiError",
    "ApiSetupError",
    "Liveness",
    "build_app",
    "daemon_app",
    "serve",
    "watch_liveness",
]

log = structlog.get_logger(__name__)

LAG_TICK = 0.5  # how often the loop-lag ticker wakes
DOCKER_PING_EVERY = 5.0
DOCKER_PING_TIMEOUT = 3.0
DEFAULT_LIMITS = ConnectionLimits()

GUARD = web.AppKey("guard", ConnectionGuard)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_json(status, message), status=status, headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON answer; nothing a client sends yields a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = f"{exc.reason}: {request.method} {request.path}"
        return _error(exc.status, message, headers)
    except Exception:
        log.exception("api handler failed", method=request.method, path=request.path)
        return _error(500, "internal error; see the daemon log")


def build_app(
    supervisor: SupervisorView,
    metrics: SupervisorMetrics,
    policy: AccessPolicy,
    liveness: Liveness | None = None,
) -> web.Application:
    """The aiohttp application; no sockets yet."""
    app = web.Application(middlewares=[_json_errors, check_access], client_max_size=64 * 1024)
    app[SUPERVISOR] = supervisor
    app[METRICS] = metrics
    app[POLICY] = policy
    app[LIVENESS] = liveness or Liveness()
    app[SCRAPES] = ScrapeCache(metrics)
    app[SERVICES_PART] = []
    app[SERVICE_TEXTS] = {}
    add_routes(app)
    add_update_routes(app)
    add_event_routes(app, supervisor.events, lambda: [s.name for s in services_of(supervisor)])
    return app


def daemon_app(
    supervisor: Supervisor, metrics: SupervisorMetrics, token: str | None, liveness: Liveness
) -> web.Application:
    """The daemon's whole app: `build_app` plus container logs and the status page."""
    config = supervisor.config.api
    hosts = HostAllowList(config.listen.rpartition(":")[0], config.allowed_hosts)
    policy = AccessPolicy(
        token, over_unix=config.unix_path is not None, loopback=config.loopback, hosts=hosts
    )
    app = build_app(supervisor, metrics, policy, liveness)
    statuses = supervisor.service_statuses
    add_log_routes(app, supervisor.runtime, containers_of(lambda: supervisor.config, statuses))
    add_status_page(app, lambda: supervisor.config)
    return app


# -- serving ----------------------------------------------------------------------------------


async def watch_liveness(live: Liveness, ping: Callable[[], Awaitable[None]]) -> None:
    """Measure loop lag every LAG_TICK and Docker reachability every DOCKER_PING_EVERY."""
    loop = asyncio.get_running_loop()
    last_ping = -DOCKER_PING_EVERY
    while True:
        expected = loop.time() + LAG_TICK
        await asyncio.sleep(LAG_TICK)
        live.loop_lag = max(0.0, loop.time() - expected)
        if loop.time() - last_ping >= DOCKER_PING_EVERY:
            last_ping = loop.time()
            try:
                async with asyncio.timeout(DOCKER_PING_TIMEOUT):
                    await ping()
            except Exception:  # unreachable, whatever the reason
                live.docker_reachable = False
            else:
                live.docker_reachable = True


@contextlib.asynccontextmanager
async def serve(
    app: web.Application,
    config: ApiConfig,
    ping: Callable[[], Awaitable[None]],
    limits: ConnectionLimits = DEFAULT_LIMITS,
    bound: BoundApi | None = None,
) -> AsyncIterator[web.AppRunner]:
    """Serve `app` until the context exits, within `limits`: on `bound`, or on the configured
    address bound here (and closed after; a socket passed in stays its owner's to close)."""
    # Bind first: only a socket this daemon bound is ever removed (never another's, nor a file).
    listening = bind_api(config) if bound is None else bound
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=limits.idle_timeout
    )
    try:
        guard = ConnectionGuard(limits)
        app.middlewares.insert(0, guard.track)
        app[GUARD] = guard
        await runner.setup()
        assert runner.server is not None
        guard.attach(runner.server)
        for sock in listening.sockets:
            await CappedSite(runner, guard, name=config.listen, sock=sock).start()
        log.info("api listening", address=config.listen, token=config.token_file is not None)
        async with asyncio.TaskGroup() as group:
            background = [
                group.create_task(watch_liveness(app[LIVENESS], ping), name="api-liveness"),
                group.create_task(app[SCRAPES].run(), name="api-metrics-render"),
            ]
            try:
                yield runner
            finally:
                for task in background:
                    task.cancel()
    finally:
        await runner.cleanup()
        if bound is None:
            listening.close()
