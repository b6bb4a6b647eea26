"""API contract tests: aiohttp's test client against the app with a fake supervisor and stack."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import re
import socket
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import test_utils, web

from supervisor.api import (
    SCRAPES,
    AccessPolicy,
    ApiSetupError,
    Liveness,
    build_app,
    serve,
)
from supervisor.api_logs import add_log_routes, containers_of
from supervisor.client import ApiClient, ApiRefused
from supervisor.config import ApiConfig, parse_config
from supervisor.daemon import ReloadResult
from supervisor.daemon_lifecycle import DaemonState
from supervisor.docker_api import ContainerNotFound, LogOptions
from supervisor.events import EventLog
from supervisor.metrics import SupervisorMetrics
from supervisor.openapi import OPENAPI
from supervisor.probes import ProbeResult
from supervisor.service import State
from supervisor.stack import OperatorCommand
from supervisor.status import ServiceStatus
from supervisor.status_page import add_status_page
from supervisor.updates import UpdateRequest, UpdateResult

TOKEN = "t0ken-for-tests"
CANARY = "canary-value-never-shown"


def service(name: str, state: State = State.HEALTHY, **kw: Any) -> ServiceStatus:
    base: dict[str, Any] = {
        "name": name,
        "type": "service",
        "image": "ovpn-stand-in:latest",
        "state": state,
        "reason": "probe succeeded",
        "since": 1_700_000_000.0,
        "container_id": "c" * 64,
        "restarts": 0,
        "last_exit_code": None,
        "last_probe": ProbeResult(True, "HTTP 200", 0.004, 1_700_000_001.0, 200),
        "has_probe": True,
        "blocked_by": None,
        "operator_stopped": False,
        "environment_keys": ("DB_PASSWORD",),
    }
    return ServiceStatus(**{**base, **kw})


@dataclass
class FakeStack:
    services: list[ServiceStatus]
    requests: list[tuple[str, OperatorCommand]] = field(default_factory=list)
    broken: bool = False

    def statuses(self) -> list[ServiceStatus]:
        if self.broken:
            raise RuntimeError(f"internal detail {CANARY}")
        return list(self.services)

    def target_reached(self) -> bool:
        return all(s.up_to_target for s in self.services)

    def request(self, service: str, command: OperatorCommand) -> None:
        if service not in {s.name for s in self.services}:
            raise KeyError(service)
        self.requests.append((service, command))


@dataclass
class FakeSupervisor:
    stack: FakeStack | None
    config_path: Path = Path("/etc/ovpn-supervisor/supervisor.yaml")
    config_digest: str = "0123456789abcdef"
    version: str = "0.1.0"
    state: DaemonState = DaemonState.RUNNING
    docker_connected: bool = True
    last_reload: ReloadResult | None = None
    last_update: UpdateResult | None = None
    uptime: float = 42.0
    events: EventLog = field(default_factory=EventLog)
    next_reload: ReloadResult = field(
        default_factory=lambda: ReloadResult(True, 1_700_000_100.0, "applied", changed=("web",))
    )

    async def reload(self) -> ReloadResult:
        self.last_reload = self.next_reload
        return self.next_reload

    async def update(self, request: UpdateRequest) -> UpdateResult:
        raise LookupError("no updates in this fake")

    async def backup(self, services: tuple[str, ...]) -> tuple[bool, str, list[str]]:
        return False, "no backups in this fake", []

    async def restore(self, service: str, backup: str) -> tuple[bool, str]:
        return False, "no restores in this fake"


@dataclass
class FakeLogs:
    """Container output by container id or name, for the log endpoints."""

    output: dict[str, bytes] = field(default_factory=dict)
    asked: list[tuple[str, LogOptions]] = field(default_factory=list)

    async def container_logs(self, name_or_id: str, options: LogOptions) -> bytes:
        self.asked.append((name_or_id, options))
        if name_or_id not in self.output:
            raise ContainerNotFound(f"container {name_or_id}: not found")
        return self.output[name_or_id]

    async def follow_logs(self, name_or_id: str, options: LogOptions) -> AsyncGenerator[bytes]:
        yield await self.container_logs(name_or_id, options)


PAGE_CONFIG = parse_config(
    "version: 1\nproject: t\nservices:\n  db: {image: x}\n"
    "  web: {image: x, depends_on: {db: started}}\n"
)


def add_page_and_logs(app: web.Application, sup: FakeSupervisor, logs: FakeLogs) -> None:
    """What `api_component` adds beside `build_app`: logs and the status page."""
    statuses = lambda: sup.stack.statuses() if sup.stack else []  # noqa: E731
    add_log_routes(app, logs, containers_of(lambda: PAGE_CONFIG, statuses))
    add_status_page(app, lambda: PAGE_CONFIG)


def fake_supervisor(*services: ServiceStatus) -> FakeSupervisor:
    return FakeSupervisor(FakeStack(list(services or (service("web"), service("db")))))


def make_metrics(sup: FakeSupervisor) -> SupervisorMetrics:
    return SupervisorMetrics(
        version="0.1.0",
        statuses=lambda: sup.stack.statuses() if sup.stack else [],
        docker_connected=lambda: sup.docker_connected,
    )


MakeClient = Callable[..., Awaitable[test_utils.TestClient[web.Request, web.Application]]]


@contextlib.asynccontextmanager
async def client_factory() -> AsyncIterator[MakeClient]:
    """Test clients of the app as `api_component` builds it, fakes behind it; closed after."""
    clients: list[test_utils.TestClient[web.Request, web.Application]] = []

    async def make(
        sup: FakeSupervisor,
        *,
        token: str | None = TOKEN,
        loopback: bool = True,
        liveness: Liveness | None = None,
        logs: FakeLogs | None = None,
    ) -> test_utils.TestClient[web.Request, web.Application]:
        policy = AccessPolicy(token, over_unix=False, loopback=loopback)
        app = build_app(sup, make_metrics(sup), policy, liveness)
        add_page_and_logs(app, sup, logs or FakeLogs())
        client = test_utils.TestClient(test_utils.TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    async with client_factory() as make:
        yield make


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_status_shows_daemon_and_services_with_env_keys_only(make_client: MakeClient) -> None:
    sup = fake_supervisor(service("web"), service("db", State.UNHEALTHY, reason="probe failed"))
    sup.last_reload = ReloadResult(False, 1.0, "config invalid", errors=("x: bad",))
    client = await make_client(sup)
    resp = await client.get("/v1/status")
    assert resp.status == 200
    body = await resp.json()
    daemon = body["daemon"]
    assert daemon["state"] == "running"
    assert daemon["config_file"] == "/etc/ovpn-supervisor/supervisor.yaml"
    assert daemon["config_digest"] == "0123456789abcdef"
    assert daemon["docker_connected"] is True
    assert daemon["uptime_seconds"] == 42.0
    assert daemon["last_reload"]["errors"] == ["x: bad"]
    assert daemon["all_up"] is False
    assert "db unhealthy" in daemon["summary"]
    web_svc, db = body["services"]
    assert web_svc["name"] == "web" and web_svc["health"] == "healthy"
    assert web_svc["last_probe"] == {
        "ok": True,
        "detail": "HTTP 200",
        "status": 200,
        "latency_seconds": 0.004,
        "at": 1_700_000_001.0,
    }
    assert web_svc["environment_keys"] == ["DB_PASSWORD"]
    assert db["health"] == "unhealthy" and db["reason"] == "probe failed"
    assert set(web_svc) == set(OPENAPI["components"]["schemas"]["Service"]["properties"])
    assert set(daemon) == set(OPENAPI["components"]["schemas"]["Daemon"]["properties"])


async def test_service_by_name_or_404_or_400(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor())
    resp = await client.get("/v1/services/db")
    assert resp.status == 200
    assert (await resp.json())["name"] == "db"
    missing = await client.get("/v1/services/nope")
    assert missing.status == 404
    assert await missing.json() == {"error": "Not Found", "message": "no service named 'nope'"}
    bad = await client.get("/v1/services/-bad%20name")
    assert bad.status == 400
    assert "invalid service name" in (await bad.json())["message"]


async def test_reads_need_no_token_on_loopback(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor())
    for path in ("/v1/status", "/v1/services/web", "/healthz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status == 200, path


@pytest.mark.parametrize("action", ["restart", "stop", "start"])
async def test_commands_need_the_bearer_token_over_tcp(
    make_client: MakeClient, action: str
) -> None:
    sup = fake_supervisor()
    client = await make_client(sup)
    path = f"/v1/services/web/{action}"
    missing = await client.post(path)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "missing bearer token" in (await missing.json())["message"]
    wrong = await client.post(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert (await wrong.json())["message"] == "wrong token"
    basic = await client.post(path, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401
    assert sup.stack is not None and sup.stack.requests == []
    ok = await client.post(path, headers=AUTH)
    assert ok.status == 202
    assert await ok.json() == {
        "service": "web",
        "action": action,
        "accepted": True,
        "state": "healthy",
    }
    assert sup.stack.requests == [("web", OperatorCommand(action))]


async def test_commands_are_forbidden_over_tcp_without_a_configured_token(
    make_client: MakeClient,
) -> None:
    sup = fake_supervisor()
    client = await make_client(sup, token=None)
    resp = await client.post("/v1/services/web/restart", headers=AUTH)
    assert resp.status == 403
    assert "api.token_file" in (await resp.json())["message"]
    assert (await client.post("/v1/reload")).status == 403
    assert sup.stack is not None and sup.stack.requests == []


async def test_non_loopback_listener_needs_the_token_for_reads_too(
    make_client: MakeClient,
) -> None:
    client = await make_client(fake_supervisor(), loopback=False)
    assert (await client.get("/v1/status")).status == 401
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/v1/status", headers=AUTH)).status == 200
    assert (await client.get("/healthz")).status == 200


async def test_unknown_service_command_is_404(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor())
    resp = await client.post("/v1/services/ghost/restart", headers=AUTH)
    assert resp.status == 404
    assert (await client.post("/v1/services/web/explode", headers=AUTH)).status == 404


async def test_errors_are_json_with_allow_on_405(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor())
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"] == "Not Found"
    wrong_method = await client.get("/v1/reload")
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert (await wrong_method.json())["error"] == "Method Not Allowed"
    delete = await client.delete("/v1/status")
    assert delete.status == 405


async def test_commands_while_not_supervising_are_409(make_client: MakeClient) -> None:
    sup = FakeSupervisor(stack=None, state=DaemonState.WAITING_FOR_DOCKER)
    client = await make_client(sup)
    resp = await client.post("/v1/services/web/restart", headers=AUTH)
    assert resp.status == 409
    assert "waiting-for-docker" in (await resp.json())["message"]
    status = await (await client.get("/v1/status")).json()
    assert status["services"] == [] and status["daemon"]["all_up"] is False


async def test_reload_answers_with_the_result(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    client = await make_client(sup)
    applied = await client.post("/v1/reload", headers=AUTH)
    assert applied.status == 200
    assert await applied.json() == {
        "ok": True,
        "at": 1_700_000_100.0,
        "message": "applied",
        "errors": [],
        "added": [],
        "removed": [],
        "changed": ["web"],
        "notes": [],
    }
    sup.next_reload = ReloadResult(False, 2.0, "config invalid", errors=("services.x: bad",))
    refused = await client.post("/v1/reload", headers=AUTH)
    assert refused.status == 422
    assert (await refused.json())["errors"] == ["services.x: bad"]
    sup.state = DaemonState.STOPPING
    assert (await client.post("/v1/reload", headers=AUTH)).status == 409


async def test_an_internal_failure_is_a_json_500_without_details(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    assert sup.stack is not None
    sup.stack.broken = True
    client = await make_client(sup)
    resp = await client.get("/v1/status")
    assert resp.status == 500
    text = await resp.text()
    assert CANARY not in text and "Traceback" not in text
    assert (await resp.json())["message"] == "internal error; see the daemon log"


async def test_healthz_reports_loop_lag_and_docker(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    live = Liveness(loop_lag=0.01)
    client = await make_client(sup, liveness=live)
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "loop_lag_seconds": 0.01, "docker_connected": True}
    live.docker_reachable = False
    assert (await client.get("/healthz")).status == 503
    live.docker_reachable, live.loop_lag = True, 5.0
    stalled = await client.get("/healthz")
    assert stalled.status == 503
    assert (await stalled.json())["ok"] is False


async def test_metrics_endpoint_serves_prometheus_text(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor())
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'ovpn_supervisor_service_state{service="web",state="healthy"} 1.0' in text


async def test_openapi_documents_every_route(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor())
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert isinstance(client.server, test_utils.TestServer)
    app = client.server.app
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    # The three commands share one route; the document spells each out.
    documented = {
        (method, re.sub(r"\{name\}/(restart|stop|start)$", "{name}/{action}", path))
        for path, ops in doc["paths"].items()
        for method in ops
    }
    for verb in ("restart", "stop", "start"):
        assert f"/v1/services/{{name}}/{verb}" in doc["paths"]
    assert served == documented


# -- the unix socket --------------------------------------------------------------------------


def _own_group() -> str:
    return grp.getgrgid(os.getgid()).gr_name


async def test_unix_socket_has_its_mode_and_group_and_needs_no_token(tmp_path: Path) -> None:
    sup = fake_supervisor()
    path = tmp_path / "run" / "api.sock"
    config = ApiConfig(listen=f"unix://{path}", socket_mode=0o660, socket_group=_own_group())
    app = build_app(sup, make_metrics(sup), AccessPolicy(None, over_unix=True, loopback=True))

    async def ping() -> None:
        return None

    async with serve(app, config, ping):
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getgid()
        client = ApiClient(f"unix://{path}")
        answer = await _in_thread(
            lambda: client.request("POST", "/v1/services/web/stop", accept=(202,))
        )
        assert answer["action"] == "stop"
        assert sup.stack is not None and sup.stack.requests == [("web", OperatorCommand.STOP)]
        with pytest.raises(ApiRefused) as refused:
            await _in_thread(lambda: client.get("/v1/services/ghost"))
        assert refused.value.status == 404
        # A second daemon on the same socket is refused, not allowed to steal it.
        with pytest.raises(ApiSetupError, match="already serving"):
            async with serve(app, config, ping):
                pass
    assert not path.exists()


async def test_stale_socket_is_replaced_and_a_regular_file_is_left_alone(tmp_path: Path) -> None:
    sup = fake_supervisor()
    app = build_app(sup, make_metrics(sup), AccessPolicy(None, over_unix=True, loopback=True))

    async def ping() -> None:
        return None

    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # bound, never listening: what a killed daemon leaves behind
    async with serve(app, ApiConfig(listen=f"unix://{stale}"), ping):
        status = await _in_thread(lambda: ApiClient(f"unix://{stale}").get("/v1/status"))
        assert len(status["services"]) == 2
    regular = tmp_path / "file.sock"
    regular.write_text("keep me")
    with pytest.raises(ApiSetupError, match="not a socket"):
        async with serve(app, ApiConfig(listen=f"unix://{regular}"), ping):
            pass
    assert regular.read_text() == "keep me"
    with pytest.raises(ApiSetupError, match="no group named"):
        config = ApiConfig(listen=f"unix://{tmp_path}/g.sock", socket_group="no-such-group-x")
        async with serve(app, config, ping):
            pass


async def _in_thread(call: Callable[[], Any]) -> Any:
    """The blocking CLI client, off the loop that serves the app."""
    return await asyncio.to_thread(call)


async def test_metrics_are_served_from_a_copy_that_refresh_renews(make_client: MakeClient) -> None:
    sup = fake_supervisor(service("web"))
    client = await make_client(sup)
    assert 'state="healthy"} 1.0' in await (await client.get("/metrics")).text()
    assert sup.stack is not None
    sup.stack.services[0] = service("web", State.FAILED)
    # Within the refresh period the copy is served as is; a refresh renders the new state.
    assert 'state="healthy"} 1.0' in await (await client.get("/metrics")).text()
    assert isinstance(client.server, test_utils.TestServer)
    app = client.server.app
    await app[SCRAPES].refresh()
    assert 'state="failed"} 1.0' in await (await client.get("/metrics")).text()


async def test_status_services_are_serialised_once_per_change(make_client: MakeClient) -> None:
    sup = fake_supervisor(service("web"))
    sup.status_generation = 1  # type: ignore[attr-defined]
    client = await make_client(sup)
    first = await (await client.get("/v1/status")).json()
    assert sup.stack is not None
    sup.stack.services = [service("web"), service("db")]
    # Same generation: the cached services part is served (nothing changed as far as it knows).
    assert (await (await client.get("/v1/status")).json())["services"] == first["services"]
    sup.status_generation = 2  # type: ignore[attr-defined]
    names = [s["name"] for s in (await (await client.get("/v1/status")).json())["services"]]
    assert names == ["web", "db"]


async def test_status_serialises_again_only_the_services_that_changed(
    make_client: MakeClient,
) -> None:
    sup = fake_supervisor(service("web"), service("db"))
    marks = {"web": 1, "db": 1}
    sup.status_generation = 1  # type: ignore[attr-defined]
    sup.service_mark = marks.__getitem__  # type: ignore[attr-defined]
    client = await make_client(sup)
    await client.get("/v1/status")
    assert sup.stack is not None
    sup.stack.services = [service("web", State.FAILED), service("db", State.FAILED)]
    marks["web"] = 2  # only web's change was reported
    sup.status_generation = 2  # type: ignore[attr-defined]
    body = await (await client.get("/v1/status")).json()
    states = {s["name"]: s["state"] for s in body["services"]}
    assert states == {"web": "failed", "db": "healthy"}  # db's text was kept as serialised
