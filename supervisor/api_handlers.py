"""The status API's core handlers: status, one service, operator commands, reload, health,
metrics and the OpenAPI document; and what they read the daemon through.

Answers are built by `api_contract`'s serializers; who may call is `api_access`' concern.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from supervisor.api_access import POLICY
from supervisor.api_contract import (
    ApiError,
    CommandAcceptedBody,
    DaemonBody,
    HealthBody,
    dumps,
    reload_json,
    service_json,
    update_json,
)
from supervisor.api_setup import Liveness
from supervisor.config import NAME_RE
from supervisor.daemon import ReloadResult
from supervisor.daemon_lifecycle import DaemonState
from supervisor.events import EventKind, EventLog
from supervisor.metrics import SupervisorMetrics
from supervisor.model import OperatorCommand
from supervisor.openapi import OPENAPI
from supervisor.status import ServiceStatus, summarize
from supervisor.updates import UpdateRequest, UpdateResult

log = structlog.get_logger(__name__)

LAG_LIMIT = 2.0  # a loop this late is not responsive


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


@dataclass
class _ServicesPart:
    """The services' part of /v1/status, serialised once per change rather than per request."""

    generation: int
    text: str
    summary: str
    all_up: bool


SUPERVISOR = web.AppKey("supervisor", SupervisorView)
METRICS = web.AppKey("metrics", SupervisorMetrics)
LIVENESS = web.AppKey("liveness", Liveness)
SCRAPES = web.AppKey("scrapes", ScrapeCache)
SERVICES_PART = web.AppKey("services_part", list[_ServicesPart])
# service -> (its change mark, its JSON) as last serialised
SERVICE_TEXTS = web.AppKey("service_texts", dict[str, tuple[int | None, str]])


def services_of(sup: SupervisorView) -> list[ServiceStatus]:
    return sup.stack.statuses() if sup.stack is not None else []


def supervising(sup: SupervisorView) -> StackView:
    """The stack, or 409 when the daemon is not supervising one right now."""
    if sup.stack is None or sup.state in (DaemonState.STOPPING, DaemonState.WAITING_FOR_DOCKER):
        raise ApiError(409, f"not supervising a stack right now (daemon {sup.state.value})")
    return sup.stack


def _services_part(request: web.Request) -> _ServicesPart:
    sup = request.app[SUPERVISOR]
    generation = getattr(sup, "status_generation", None)
    held = request.app[SERVICES_PART]
    if generation is not None and held and held[0].generation == generation:
        return held[0]
    statuses = services_of(sup)
    part = _ServicesPart(
        generation=-1 if generation is None else generation,
        text="[" + ",".join(_service_texts(request.app, sup, statuses)) + "]",
        summary=summarize(statuses) if statuses else "no services supervised yet",
        all_up=bool(statuses) and all(s.up_to_target for s in statuses),
    )
    held[:] = [part] if generation is not None else []
    return part


def _service_texts(
    app: web.Application, sup: SupervisorView, statuses: list[ServiceStatus]
) -> list[str]:
    """Each service's JSON, serialised again only when that service changed: with many
    services, probe results change the status many times a second, one service at a time."""
    mark_of = getattr(sup, "service_mark", None)
    held = app[SERVICE_TEXTS]
    texts = []
    for status in statuses:
        mark = mark_of(status.name) if mark_of is not None else None
        kept = held.get(status.name)
        if mark is None or kept is None or kept[0] != mark:
            kept = (mark, dumps(service_json(status)))
            held[status.name] = kept
        texts.append(kept[1])
    if len(held) > len(statuses):  # services removed by a reload
        names = {s.name for s in statuses}
        for name in [n for n in held if n not in names]:
            del held[name]
    return texts


async def get_status(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    services = _services_part(request)
    daemon: DaemonBody = {
        "state": sup.state,
        "version": sup.version,
        "pid": os.getpid(),
        "uptime_seconds": sup.uptime,
        "config_file": str(sup.config_path),
        "config_digest": sup.config_digest,
        "docker_connected": sup.docker_connected,
        "last_reload": None if sup.last_reload is None else reload_json(sup.last_reload),
        "last_update": None if sup.last_update is None else update_json(sup.last_update),
        "summary": services.summary,
        "all_up": services.all_up,
    }
    # `StatusBody`, with the services' part spliced in as it was serialised.
    text = f'{{"daemon":{dumps(daemon)},"services":{services.text}}}'
    return web.Response(text=text, content_type="application/json")


def _service_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise ApiError(400, f"invalid service name {name!r}")
    return name


def _find(sup: SupervisorView, name: str) -> ServiceStatus:
    for status in services_of(sup):
        if status.name == name:
            return status
    raise ApiError(404, f"no service named {name!r}")


async def get_service(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    return web.json_response(service_json(_find(sup, _service_name(request))), dumps=dumps)


async def post_command(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    name = _service_name(request)
    action = OperatorCommand(request.match_info["action"])
    stack = supervising(sup)
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
    body: CommandAcceptedBody = {
        "service": name,
        "action": action,
        "accepted": True,
        "state": current.state,
    }
    return web.json_response(body, status=202, dumps=dumps)


async def post_reload(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    if sup.state is DaemonState.STOPPING:
        raise ApiError(409, "the daemon is stopping")
    log.info("reload requested", via="api", peer=request.remote or "")
    result = await sup.reload()
    return web.json_response(reload_json(result), status=200 if result.ok else 422, dumps=dumps)


async def get_healthz(request: web.Request) -> web.Response:
    sup, live = request.app[SUPERVISOR], request.app[LIVENESS]
    docker = sup.docker_connected and live.docker_reachable
    ok = docker and live.loop_lag < LAG_LIMIT
    body: HealthBody = {"ok": ok, "loop_lag_seconds": live.loop_lag, "docker_connected": docker}
    return web.json_response(body, status=200 if ok else 503, dumps=dumps)


async def get_metrics(request: web.Request) -> web.Response:
    body = await request.app[SCRAPES].get()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


_OPENAPI_BODY = dumps(OPENAPI)


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(text=_OPENAPI_BODY, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/services/{name}", get_service)
    app.router.add_post("/v1/services/{name}/{action:restart|stop|start}", post_command)
    app.router.add_post("/v1/reload", post_reload)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/openapi.json", get_openapi)
