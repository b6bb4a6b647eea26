"""Hostile API clients (issue 11): connection floods, slow and idle clients, DNS rebinding,
repeated log lines, the CLI's token, and a reload that cannot apply `api.*`."""

from __future__ import annotations

import argparse
import asyncio
import http.server
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage
from daemon_process import free_port
from test_api import fake_supervisor, make_metrics
from test_systemd import make_notifier, reload, start_stack, status

from supervisor import remote_commands
from supervisor.api import GUARD, AccessPolicy, build_app, serve
from supervisor.api_guards import ConnectionGuard, ConnectionLimits, HostAllowList
from supervisor.client import ApiClient
from supervisor.config import ApiConfig, parse_config
from supervisor.logs import Throttle, _StdlibToStructlog
from supervisor.service import State

LIMITS = ConnectionLimits(max_connections=8, header_timeout=0.3, idle_timeout=1.0)


@asynccontextmanager
async def small_server(
    limits: ConnectionLimits = LIMITS, token: str | None = None
) -> AsyncIterator[tuple[int, ConnectionGuard]]:
    """The API app (with fakes behind it) served on a free loopback port within `limits`."""

    async def ping() -> None:
        return None

    sup = fake_supervisor()
    app = build_app(sup, make_metrics(sup), AccessPolicy(token, over_unix=False, loopback=True))
    port = free_port()
    async with serve(app, ApiConfig(listen=f"127.0.0.1:{port}"), ping, limits):
        yield port, app[GUARD]


async def get_healthz(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    return True


# --------------------------------------------------------------------------- 2: floods


async def test_idle_flood_past_the_cap_pushes_itself_out_and_healthz_answers() -> None:
    async with small_server(
        ConnectionLimits(max_connections=8, header_timeout=30, idle_timeout=30)
    ) as (port, guard):
        flood = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        answer = await get_healthz(port)
        assert answer.startswith(b"HTTP/1.1 200")
        assert guard.evicted >= 32
        # The oldest ones were closed to make room; the newest are still open.
        assert await closed_by_server(flood[0][0], within=2)
        for _, writer in flood:
            writer.close()


@pytest.mark.slow
async def test_a_connection_that_never_sends_a_whole_request_is_closed() -> None:
    async with small_server() as (port, guard):
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await slow_writer.drain()
        assert await closed_by_server(idle_reader, within=5)
        assert await closed_by_server(slow_reader, within=5)
        assert guard.expired == 2
        idle_writer.close()
        slow_writer.close()


@pytest.mark.slow
async def test_a_kept_alive_connection_is_closed_when_idle() -> None:
    async with small_server() as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        assert await closed_by_server(reader, within=5)
        writer.close()


async def test_a_token_that_is_not_utf8_is_a_401_not_a_500() -> None:
    """Found by the raw-socket fuzzing of a live daemon."""
    async with small_server(token="the-right-token-0123456789") as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/services/web/restart HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer \xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer


def test_repeated_lines_from_other_libraries_are_throttled() -> None:
    now = [0.0]
    handler = _StdlibToStructlog(Throttle(10.0, clock=lambda: now[0]))
    logger = logging.getLogger("test.flood")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with structlog.testing.capture_logs() as logs:
            error = OSError(24, "Too many open files")
            for _ in range(1000):
                logger.error(
                    "socket.accept() out of system resource\nsocket: <fd 7>", exc_info=error
                )
            logger.error("another message")
            now[0] = 11.0
            logger.error("socket.accept() out of system resource\nsocket: <fd 7>", exc_info=error)
    finally:
        logger.removeHandler(handler)
    assert [(e["event"].partition("\n")[0], e.get("repeats_dropped")) for e in logs] == [
        ("socket.accept() out of system resource", None),
        ("another message", None),
        ("socket.accept() out of system resource", 999),
    ]


def test_a_malformed_request_is_logged_as_the_client_s_mistake_at_debug() -> None:
    handler = _StdlibToStructlog(Throttle(10.0))
    logger = logging.getLogger("test.bad_request")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with structlog.testing.capture_logs() as logs:
            logger.error("Error handling request", exc_info=BadHttpMessage("bad\nheader"))
    finally:
        logger.removeHandler(handler)
    assert [(e["event"], e["log_level"], e["error"]) for e in logs] == [
        ("bad request from a client", "debug", "400, message: bad header")
    ]


# --------------------------------------------------------------------------- 8: Host header


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (None, True),
        ("127.0.0.1:9180", True),
        ("[::1]:9180", True),
        ("localhost:9180", True),
        ("LOCALHOST.", True),
        ("10.1.2.3", True),
        ("vpn.example.org:9180", True),
        ("rebind.attacker.example:9180", False),
        ("localhost.attacker.example", False),
        ("", False),
    ],
)
def test_host_allow_list(header: str | None, allowed: bool) -> None:
    assert HostAllowList("127.0.0.1", ["vpn.example.org"]).allows(header) is allowed


def test_allowed_hosts_config_key(tmp_path: Path) -> None:
    head = "version: 1\nproject: p\nservices: {}\n"
    api = parse_config(head + "api: {allowed_hosts: [VPN.example.org]}\n", base_dir=tmp_path).api
    assert api.allowed_hosts == ("vpn.example.org",)
    with pytest.raises(Exception, match=r"api.allowed_hosts\[0\]: expected a host name"):
        parse_config(head + "api: {allowed_hosts: ['http://x/']}\n", base_dir=tmp_path)


# --------------------------------------------------------------------------- 10: CLI token


class Recording(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []  # noqa: RUF012 - per-test, reset by the fixture

    def _answer(self) -> None:
        Recording.seen.append((self.command, self.headers.get("Authorization")))
        body = b'{"ok": true, "state": "running"}'
        self.send_response(200 if self.command == "GET" else 202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    Recording.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_token_goes_with_changes_only(recorder: str) -> None:
    client = ApiClient(recorder, "secret-token-0123456789")
    client.get("/v1/status")
    client.request("POST", "/v1/services/web/restart", accept=(202,))
    assert Recording.seen == [("GET", None), ("POST", "Bearer secret-token-0123456789")]


def cli_args(api: str | None, token_file: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(api=api, token_file=token_file)


def test_configured_token_goes_only_to_the_configured_or_a_loopback_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("configured-token-0123456789\n")
    config = tmp_path / "s.yaml"
    config.write_text(f"api: {{listen: '10.0.0.5:9180', token_file: {token}}}\n")
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "api-9180.token").write_text("generated-token-0123456789\n")
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(runtime))

    def token_for(api: str | None, token_file: str | None = None) -> str | None:
        return remote_commands._client(cli_args(api, token_file), config, True).token

    assert token_for(None) == "configured-token-0123456789"  # the configured address
    assert token_for("10.0.0.5:9180") == "configured-token-0123456789"
    assert token_for("evil.example:9180") is None  # typed, not configured: nothing sent
    assert token_for("10.9.9.9:9180") is None
    assert token_for("127.0.0.1:9180") == "generated-token-0123456789"  # loopback: local token
    # A token file the operator names goes where the operator says.
    assert token_for("10.9.9.9:9180", str(token)) == "configured-token-0123456789"


# --------------------------------------------------------------------------- 11: api.* reload


async def test_reload_of_a_new_token_says_it_is_not_applied_until_restart(
    tmp_path: Path,
) -> None:
    sd, supervisor, _, _ = make_notifier(tmp_path)
    token = tmp_path / "token"
    token.write_text("first-token-0123456789\n")
    token.chmod(0o600)
    text = supervisor.config_path.read_text() + f"api: {{token_file: {token}}}\n"
    supervisor.config_path.write_text(text)
    supervisor.config = parse_config(text, source=supervisor.config_path)
    start_stack(supervisor, status("db", State.HEALTHY), status("web", State.HEALTHY))
    sd.refresh()
    token.write_text("second-token-0123456789\n")
    result = await reload(supervisor)
    assert result.ok
    assert result.message == "nothing applied live: some changes need a daemon restart (see notes)"
    assert result.notes == (
        "the token in api.token_file changed: not applied until the daemon restarts "
        "(the old settings stay in force)",
    )
    supervisor.config_path.write_text(text.replace("api: {", "api: {listen: '127.0.0.1:9999', "))
    result = await reload(supervisor)
    assert result.notes == (
        "api.listen changed: not applied until the daemon restarts "
        "(the old settings stay in force)",
    )
