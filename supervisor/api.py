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
import grp
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from supervisor.api_access import POLICY, AccessPolicy, ApiSetupError, check_access, read_token
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
    Liveness,
    ScrapeCache,
    SupervisorView,
    add_routes,
    services_of,
)
from supervisor.api_logs import add_log_routes, containers_of
from supervisor.api_updates import add_routes as add_update_routes
from supervisor.config import ApiConfig
from supervisor.daemon import Supervisor
from supervisor.local_token import create_token, generated_token_path, remove_token
from supervisor.metrics import SupervisorMetrics
from supervisor.status import ServiceStatus
from supervisor.status_page import add_status_page

__all__ = [
    "GUARD",
    "SCRAPES",
    "AccessPolicy",
    "ApiError",
    "ApiSetupError",
    "Liveness",
    "api_component",
    "bind_unix_socket",
    "build_app",
    "read_token",
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


# -- serving ----------------------------------------------------------------------------------


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
    sock.listen(128)
    sock.setblocking(False)
    return sock


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
) -> AsyncIterator[web.AppRunner]:
    """Serve `app` on the configured address until the context exits, within `limits`."""
    unix = config.unix_path
    # Bind first: only a socket this daemon bound is ever removed (never another's, nor a file).
    sock = bind_unix_socket(unix, config.socket_mode, config.socket_group) if unix else None
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
        host, _, port = config.listen.rpartition(":")
        site = CappedSite(
            runner,
            guard,
            name=config.listen,
            sock=sock,
            host=None if sock is not None else host.strip("[]"),
            port=None if sock is not None else int(port),
        )
        try:
            await site.start()
        except OSError as exc:
            raise ApiSetupError(f"cannot listen on {config.listen}: {exc.strerror or exc}") from exc
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
        if sock is not None and unix is not None:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                unix.unlink()


def api_component(supervisor: Supervisor) -> contextlib.AbstractAsyncContextManager[Any]:
    """The daemon component: metrics registered as an observer, the API served beside the stack."""
    config = supervisor.config.api
    token = read_token(config.token_file) if config.token_file is not None else None
    generated: Path | None = None
    if token is None and config.unix_path is None:
        generated = generated_token_path(config.listen)
        try:
            token = create_token(generated)
        except OSError as exc:
            log.warning(
                "no api.token_file and cannot write one: changes over TCP disabled",
                path=str(generated),
                error=str(exc),
            )
            generated = None
        else:
            log.info("api token generated for local use", path=str(generated))

    def statuses() -> Sequence[ServiceStatus]:
        return supervisor.stack.statuses() if supervisor.stack is not None else []

    liveness = Liveness()
    metrics = SupervisorMetrics(
        version=supervisor.version,
        statuses=statuses,
        docker_connected=lambda: supervisor.docker_connected and liveness.docker_reachable,
        services=lambda: supervisor.config.services,
        loop_lag=lambda: liveness.loop_lag,
    )
    supervisor.observers.add(metrics)
    hosts = HostAllowList(config.listen.rpartition(":")[0], config.allowed_hosts)
    policy = AccessPolicy(
        token, over_unix=config.unix_path is not None, loopback=config.loopback, hosts=hosts
    )
    app = build_app(supervisor, metrics, policy, liveness)
    add_log_routes(app, supervisor.runtime, containers_of(lambda: supervisor.config, statuses))
    add_status_page(app, lambda: supervisor.config)
    served = serve(app, config, supervisor.runtime.ping)
    if generated is None:
        return served
    return _removing(served, generated)


@contextlib.asynccontextmanager
async def _removing(
    served: contextlib.AbstractAsyncContextManager[Any], token_path: Path
) -> AsyncIterator[Any]:
    """Serve, and take the generated token away when the API goes."""
    try:
        async with served as value:
            yield value
    finally:
        remove_token(token_path)
