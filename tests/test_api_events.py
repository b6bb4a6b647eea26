"""Events, logs, the status page and the watch commands against the app with fakes (no Docker)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_api import (
    AUTH,
    FakeLogs,
    MakeClient,
    client_factory,
    fake_supervisor,
)

from supervisor.cli import main
from supervisor.events import EventKind, EventLog
from supervisor.metrics import SupervisorMetrics
from supervisor.status import RestartCause
from supervisor.watch_commands import sse_events


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    async with client_factory() as make:
        yield make


def publish_some(sup: Any) -> None:
    for i, name in enumerate(["web", "db", "web"]):
        sup.events.publish(EventKind.STATE, f"m{i}", service=name, new="healthy")


async def test_event_history_with_filters(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    publish_some(sup)
    client = await make_client(sup)
    body = await (await client.get("/v1/events")).json()
    assert [e["message"] for e in body["events"]] == ["m0", "m1", "m2"]
    assert (body["last_id"], body["oldest_id"]) == (3, 1)
    web = await (await client.get("/v1/events?service=web&since=1")).json()
    assert [e["id"] for e in web["events"]] == [3]
    newest = await (await client.get("/v1/events?limit=1")).json()
    assert [e["id"] for e in newest["events"]] == [3]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("service=nope", 404, "no service named 'nope'"),
        ("since=x", 400, "query parameter since: expected an integer"),
        ("limit=0", 400, "query parameter limit: must be between 1 and 100000"),
        ("since_time=nan", 400, "query parameter since_time: expected a finite number"),
    ],
)
async def test_event_history_bad_input(
    make_client: MakeClient, query: str, status: int, words: str
) -> None:
    client = await make_client(fake_supervisor())
    resp = await client.get("/v1/events?" + query)
    assert resp.status == status
    assert words in (await resp.json())["message"]
    stream = await client.get("/v1/events/stream?" + query)
    if query.startswith("service"):
        assert stream.status == 404


async def read_frames(resp: Any, count: int) -> list[dict[str, Any]]:
    """The first `count` SSE data payloads (and `gap` notices) of a stream."""
    frames: list[dict[str, Any]] = []
    buffer = b""
    async with asyncio.timeout(5):
        while len(frames) < count:
            buffer += await resp.content.readany()
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                text = block.decode()
                if text.startswith("event: gap"):
                    frames.append({"gap": text.split("data: ", 1)[1]})
                elif "data: " in text:
                    frames.extend(sse_events([block + b"\n\n"]))
    return frames


async def test_stream_resumes_after_last_event_id_then_goes_live(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    publish_some(sup)
    client = await make_client(sup)
    resp = await client.get("/v1/events/stream", headers={"Last-Event-ID": "1"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    held = await read_frames(resp, 2)
    assert [e["id"] for e in held] == [2, 3]
    sup.events.publish(EventKind.DOCKER, "Docker Engine connection lost", connected=False)
    (live,) = await read_frames(resp, 1)
    assert (live["id"], live["kind"], live["service"]) == (4, "docker", None)
    resp.close()


async def test_stream_names_a_gap_when_the_history_no_longer_holds_the_id(
    make_client: MakeClient,
) -> None:
    sup = fake_supervisor()
    sup.events.resize(2)
    publish_some(sup)  # ids 1..3, only 2 and 3 held
    client = await make_client(sup)
    resp = await client.get("/v1/events/stream?last_event_id=0&service=web")
    gap, only = await read_frames(resp, 2)
    assert gap == {"gap": '{"from": 1, "to": 1}'}
    assert only["id"] == 3
    resp.close()


async def test_a_stream_client_that_falls_behind_is_cut_off(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    sup.events = EventLog(queue_size=2)
    client = await make_client(sup)
    resp = await client.get("/v1/events/stream")
    assert resp.status == 200
    sup.events.publish(EventKind.STATE, "first", service="web")
    await read_frames(resp, 1)  # subscribed and flowing
    for i in range(5):  # one burst, faster than the handler runs: its queue of 2 overflows
        sup.events.publish(EventKind.STATE, f"burst {i}", service="web")
    async with asyncio.timeout(5):
        rest = await resp.content.read()  # the daemon ends the stream
    assert rest.count(b"id: ") < 5
    assert sup.events.subscribers == 0


async def test_operator_command_is_an_event_with_its_caller(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    client = await make_client(sup)
    assert (await client.post("/v1/services/web/restart", headers=AUTH)).status == 202
    (event,) = sup.events.history()
    assert (event.kind, event.service) == (EventKind.OPERATOR, "web")
    assert event.data["action"] == "restart" and event.data["caller"] == "token"


async def test_logs_of_a_service_through_its_container(make_client: MakeClient) -> None:
    sup = fake_supervisor()
    assert sup.stack is not None
    logs = FakeLogs({"c" * 64: b"stand-in: ready\n"})
    client = await make_client(sup, logs=logs)
    resp = await client.get("/v1/services/web/logs?tail=5&since=100&timestamps=true")
    assert resp.status == 200 and await resp.text() == "stand-in: ready\n"
    name, options = logs.asked[-1]
    assert name == "c" * 64 and (options.tail, options.since, options.timestamps) == (5, 100, True)
    follow = await client.get("/v1/services/web/logs/stream")
    assert follow.status == 200 and await follow.text() == "stand-in: ready\n"


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/services/nope/logs", 404, "no service named 'nope'"),
        ("/v1/services/nope/logs/stream", 404, "no service named 'nope'"),
        ("/v1/services/web/logs?tail=-1", 400, "query parameter tail"),
        ("/v1/services/web/logs?since=soon", 400, "query parameter since"),
        ("/v1/services/web/logs?timestamps=yes", 400, "query parameter timestamps"),
    ],
)
async def test_logs_bad_input(make_client: MakeClient, path: str, status: int, words: str) -> None:
    client = await make_client(fake_supervisor(), logs=FakeLogs({"c" * 64: b""}))
    resp = await client.get(path)
    assert resp.status == status
    assert words in (await resp.json())["message"]


async def test_logs_of_a_service_without_a_container_is_404(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor(), logs=FakeLogs())
    for path in ("/v1/services/web/logs", "/v1/services/web/logs/stream"):
        resp = await client.get(path)
        assert resp.status == 404
        assert "has no container" in (await resp.json())["message"]


async def test_status_page_is_self_contained(make_client: MakeClient) -> None:
    client = await make_client(fake_supervisor())
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    # Nothing from the network: no absolute URLs at all.
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "/v1/events/stream" in html and "sessionStorage" in html
    graph = await client.get("/graph.svg")
    assert graph.content_type == "image/svg+xml"
    svg = await graph.text()
    assert 'data-service="db"' in svg and 'data-service="web"' in svg
    assert 'data-from="db" data-to="web"' in svg and ">started</text>" in svg


def test_series_exist_for_every_service_and_reason_and_go_with_the_service() -> None:
    services = ["web", "db"]
    m = SupervisorMetrics(
        version="0", statuses=list, docker_connected=lambda: True, services=lambda: services
    )
    for name in services:
        for cause in RestartCause:
            labels = {"service": name, "reason": cause.value}
            assert m.registry.get_sample_value("ovpn_supervisor_restarts_total", labels) == 0
        assert (
            m.registry.get_sample_value("ovpn_supervisor_probe_failures_total", {"service": name})
            == 0
        )
    services.remove("db")
    m.reload_done(True, 1.0)
    text = m.render().decode()
    assert 'service="db"' not in text and 'service="web"' in text
    assert "_created" not in text


def test_since_that_does_not_parse_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["events", "--since", "yesterday"], ["logs", "web", "--since", "10"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "invalid duration" in capsys.readouterr().err


def test_sse_parser_skips_comments_and_joins_split_chunks() -> None:
    chunks = [b": keepalive\n\nid: 7\nda", b'ta: {"id": 7, "kind": "state"}\n', b"\n"]
    assert list(sse_events(chunks)) == [{"id": 7, "kind": "state"}]
