"""The local status API: an aiohttp app inside the daemon, and the component that serves it.

Gates: over TCP, POST needs `Authorization: Bearer <token>` (and, on a non-loopback address,
every request but /healthz does); over the unix socket, the socket file's mode and group are
the gate. Every 4xx is JSON, and an unexpected failure is a JSON 500 plus a log line, never a
traceback to the client. Answers carry environment keys only, never values or secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hmac
import json
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from supervisor.api_events import add_event_routes
from supervisor.api_guards import CappedSite, ConnectionGuard, ConnectionLimits, HostAllowList
from supervisor.api_logs import add_log_routes, containers_of
from supervisor.config import NAME_RE, ApiConfig
from supervisor.daemon import ReloadResult, Supervisor
from supervisor.daemon_lifecycle import DaemonState
from supervisor.events import EventKind, EventLog
from supervisor.local_token import create_token, generated_token_path, remove_token
from supervisor.metrics import SupervisorMetrics
from supervisor.openapi import OPENAPI
from supervisor.service import State
from supervisor.stack import OperatorCommand
from supervisor.status import ServiceStatus, summarize
from supervisor.status_page import add_status_page
from supervisor.updates import UpdateRequest, UpdateResult

log = structlog.get_logger(__name__)

LAG_TICK = 0.5  # how often the loop-lag ticker wakes
LAG_LIMIT = 2.0  # a loop this late is not responsive
DOCKER_PING_EVERY = 5.0
DOCKER_PING_TIMEOUT = 3.0
UNAUTHENTICATED = frozenset({"/healthz"})
DEFAULT_LIMITS = ConnectionLimits()


class ApiSetupError(Exception):
    """The API cannot be served (address in use, unreadable token file, unknown group)."""


class ApiError(Exception):
    """A client-facing error: status and message end up in the JSON answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class StackView(Protocol):
    """What the API reads from and asks of the stack."""

    def statuses(self) -> list[ServiceStatus]: ...
    def target_reached(self) -> bool: ...
    def request(self, service: str, command: OperatorCommand) -> None: ...


class SupervisorView(Protocol):
    """What the API reads from and asks of the daemon (`daemon.Supervisor`, or a test fake)."""

    config_path: Path
    config_digest: str
    version: str
    docker_connected: bool
    last_reload: ReloadResult | None
    events: EventLog
    last_update: UpdateResult | None

    @property
    def state(self) -> DaemonState: ...
    @property
    def stack(self) -> StackView | None: ...
    @property
    def uptime(self) -> float: ...
    async def reload(self) -> ReloadResult: ...
    async def update(self, request: UpdateRequest) -> UpdateResult: ...
    async def backup(self, services: tuple[str, ...]) -> tuple[bool, str, list[str]]: ...
    async def restore(self, service: str, backup: str) -> tuple[bool, str]: ...


@dataclass
class Liveness:
    """Loop lag and Docker reachability, as last measured by `watch_liveness`."""

    loop_lag: float = 0.0
    docker_reachable: bool = True


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


class ScrapeCache:
    """/metrics without stalling the loop: rendered in a worker thread, served from a copy.

    With 200 services the text is ~8k lines and takes tens of ms to render; rendering per
    request would block every other answer. While someone scrapes, `run` re-renders every
    REFRESH seconds; a scrape after a long pause renders afresh. So an answer is at most
    about REFRESH seconds old.
    """

    REFRESH = 1.0
    IDLE_AFTER = 120.0  # stop re-rendering when nobody has scraped for this long

    def __init__(self, metrics: SupervisorMetrics) -> None:
        self._metrics = metrics
        self._body: bytes | None = None
        self._rendered_at = -float("inf")
        self._scraped_at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self) -> bytes:
        now = time.monotonic()
        self._scraped_at = now
        if self._body is None or now - self._rendered_at > 2 * self.REFRESH:
            await self.refresh()
        assert self._body is not None
        return self._body

    async def refresh(self) -> None:
        async with self._lock:
            snapshot = self._metrics.snapshot()
            self._body = await asyncio.to_thread(self._metrics.render, snapshot)
            self._rendered_at = time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.REFRESH)
            if time.monotonic() - self._scraped_at < self.IDLE_AFTER:
                await self.refresh()


SUPERVISOR = web.AppKey("supervisor", SupervisorView)
METRICS = web.AppKey("metrics", SupervisorMetrics)
POLICY = web.AppKey("policy", AccessPolicy)
LIVENESS = web.AppKey("liveness", Liveness)
SCRAPES = web.AppKey("scrapes", ScrapeCache)
GUARD = web.AppKey("guard", ConnectionGuard)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": HTTPStatus(status).phrase, "message": message}
    return web.json_response(body, status=status, headers=headers)


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


@web.middleware
async def _access(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Unmatched paths go on to their 404/405 without a token check.
    if request.match_info.http_exception is None:
        request.app[POLICY].check(request)
    return await handler(request)


# -- answers ----------------------------------------------------------------------------------


def _health(status: ServiceStatus) -> str:
    if not status.has_probe:
        return "none"
    return {
        State.HEALTHY: "healthy",
        State.UNHEALTHY: "unhealthy",
        State.STARTING: "starting",
    }.get(status.state, "unknown")


def service_json(status: ServiceStatus) -> dict[str, Any]:
    """One service as the API shows it (environment keys, never values)."""
    probe = status.last_probe
    return {
        "name": status.name,
        "type": status.type,
        "image": status.image,
        "state": status.state.value,
        "health": _health(status),
        "up_to_target": status.up_to_target,
        "reason": status.reason,
        "since": status.since,
        "container_id": status.container_id,
        "restarts": status.restarts,
        "last_exit_code": status.last_exit_code,
        "last_probe": None
        if probe is None
        else {
            "ok": probe.ok,
            "detail": probe.detail,
            "status": probe.status,
            "latency_seconds": probe.latency,
            "at": probe.at,
        },
        "blocked_by": status.blocked_by,
        "operator_stopped": status.operator_stopped,
        "environment_keys": list(status.environment_keys),
    }


def reload_json(result: ReloadResult) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(result).items()}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _services(sup: SupervisorView) -> list[ServiceStatus]:
    return sup.stack.statuses() if sup.stack is not None else []


@dataclass
class _ServicesPart:
    """The services' part of /v1/status, serialised once per change rather than per request."""

    generation: int
    text: str
    summary: str
    all_up: bool


_SERVICES_PART = web.AppKey("services_part", list[_ServicesPart])


def _services_part(request: web.Request) -> _ServicesPart:
    sup = request.app[SUPERVISOR]
    generation = getattr(sup, "status_generation", None)
    held = request.app[_SERVICES_PART]
    if generation is not None and held and held[0].generation == generation:
        return held[0]
    statuses = _services(sup)
    part = _ServicesPart(
        generation=-1 if generation is None else generation,
        text=_dumps([service_json(s) for s in statuses]),
        summary=summarize(statuses) if statuses else "no services supervised yet",
        all_up=bool(statuses) and all(s.up_to_target for s in statuses),
    )
    held[:] = [part] if generation is not None else []
    return part


async def get_status(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    services = _services_part(request)
    daemon = {
        "state": sup.state.value,
        "version": sup.version,
        "pid": os.getpid(),
        "uptime_seconds": sup.uptime,
        "config_file": str(sup.config_path),
        "config_digest": sup.config_digest,
        "docker_connected": sup.docker_connected,
        "last_reload": None if sup.last_reload is None else reload_json(sup.last_reload),
        "last_update": None if sup.last_update is None else sup.last_update.to_json(),
        "summary": services.summary,
        "all_up": services.all_up,
    }
    text = f'{{"daemon":{_dumps(daemon)},"services":{services.text}}}'
    return web.Response(text=text, content_type="application/json")


def _service_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise ApiError(400, f"invalid service name {name!r}")
    return name


def _find(sup: SupervisorView, name: str) -> ServiceStatus:
    for status in _services(sup):
        if status.name == name:
            return status
    raise ApiError(404, f"no service named {name!r}")


async def get_service(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    return web.json_response(service_json(_find(sup, _service_name(request))), dumps=_dumps)


def _supervising(sup: SupervisorView) -> StackView:
    if sup.stack is None or sup.state in (DaemonState.STOPPING, DaemonState.WAITING_FOR_DOCKER):
        raise ApiError(409, f"not supervising a stack right now (daemon {sup.state.value})")
    return sup.stack


async def post_command(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    name = _service_name(request)
    action = OperatorCommand(request.match_info["action"])
    stack = _supervising(sup)
    current = _find(sup, name)
    stack.request(name, action)
    policy = request.app[POLICY]
    sup.events.publish(
        EventKind.OPERATOR,
        "operator command",
        service=name,
        action=action.value,
        caller="unix socket" if policy.over_unix else "token",
        peer=request.remote or "",
    )
    body = {"service": name, "action": action.value, "accepted": True, "state": current.state}
    return web.json_response(body, status=202, dumps=_dumps)


async def post_reload(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    if sup.state is DaemonState.STOPPING:
        raise ApiError(409, "the daemon is stopping")
    log.info("reload requested", via="api", peer=request.remote or "")
    result = await sup.reload()
    return web.json_response(reload_json(result), status=200 if result.ok else 422, dumps=_dumps)


async def get_healthz(request: web.Request) -> web.Response:
    sup, live = request.app[SUPERVISOR], request.app[LIVENESS]
    docker = sup.docker_connected and live.docker_reachable
    ok = docker and live.loop_lag < LAG_LIMIT
    body = {"ok": ok, "loop_lag_seconds": live.loop_lag, "docker_connected": docker}
    return web.json_response(body, status=200 if ok else 503, dumps=_dumps)


async def get_metrics(request: web.Request) -> web.Response:
    body = await request.app[SCRAPES].get()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


_OPENAPI_BODY = _dumps(OPENAPI)


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(text=_OPENAPI_BODY, content_type="application/json")


def build_app(
    supervisor: SupervisorView,
    metrics: SupervisorMetrics,
    policy: AccessPolicy,
    liveness: Liveness | None = None,
) -> web.Application:
    """The aiohttp application; no sockets yet."""
    app = web.Application(middlewares=[_json_errors, _access], client_max_size=64 * 1024)
    app[SUPERVISOR] = supervisor
    app[METRICS] = metrics
    app[POLICY] = policy
    app[LIVENESS] = liveness or Liveness()
    app[SCRAPES] = ScrapeCache(metrics)
    app[_SERVICES_PART] = []
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/services/{name}", get_service)
    app.router.add_post("/v1/services/{name}/{action:restart|stop|start}", post_command)
    app.router.add_post("/v1/reload", post_reload)
    # That module builds on this one's errors and keys, so it is imported here, not at the top.
    from supervisor.api_updates import add_routes  # noqa: PLC0415

    add_routes(app)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/openapi.json", get_openapi)
    add_event_routes(app, supervisor.events, lambda: [s.name for s in _services(supervisor)])
    return app


# -- serving ----------------------------------------------------------------------------------


def read_token(path: Path) -> str:
    """The bearer token from its file (surrounding whitespace stripped)."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiSetupError(f"api.token_file {str(path)!r}: cannot read it ({exc})") from exc
    if not token:
        raise ApiSetupError(f"api.token_file {str(path)!r} is empty")
    return token


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
