"""The API's event endpoints: the history (`GET /v1/events`) and the live stream (Server-Sent
Events, `GET /v1/events/stream`, resumed with `Last-Event-ID`).

Registered by `api.build_app`; the access rules are the app's (the middleware runs first).
Errors are raised as aiohttp HTTP exceptions whose reason names the bad parameter; the app's
error middleware turns them into its JSON answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable, Iterable, Iterator

import structlog
from aiohttp import web

from supervisor.api_contract import EventsBody, dumps, event_json
from supervisor.events import Event, EventLog, SubscriberDropped

log = structlog.get_logger(__name__)

KEEPALIVE = 15.0  # a comment line this often: proxies keep the stream open, dead peers show
WRITE_TIMEOUT = 10.0  # a client that takes longer to accept one event is cut off
MAX_LIMIT = 100_000

EVENTS = web.AppKey("events", EventLog)
SERVICE_NAMES: web.AppKey[Callable[[], Iterable[str]]] = web.AppKey("service_names")
STREAMS: web.AppKey[set[asyncio.Task[object]]] = web.AppKey("streams")


@contextlib.contextmanager
def endless(request: web.Request) -> Iterator[None]:
    """Mark the current handler as an endless stream: ended when the server shuts down, so
    an open stream never holds the daemon's stop for aiohttp's shutdown timeout."""
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]
    streams.add(task)
    try:
        yield
    finally:
        streams.discard(task)


async def end_streams(app: web.Application) -> None:
    streams: set[asyncio.Task[object]] = app[STREAMS]
    for task in list(streams):
        task.cancel()


def allow_streams(app: web.Application) -> None:
    """Let handlers of `app` use `endless` (call while registering routes)."""
    if STREAMS not in app:
        app[STREAMS] = set()
        app.on_shutdown.append(end_streams)


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(reason=message)


def _int(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"query parameter {key}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise bad_request(f"query parameter {key}: must be between {low} and {high}, got {value}")
    return value


def _number(request: web.Request, key: str) -> float | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"query parameter {key}: expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise bad_request(f"query parameter {key}: expected a finite number, got {raw!r}")
    return value


def _service(request: web.Request) -> str | None:
    """The `service` filter: a configured service's name, or 404."""
    name = request.query.get("service")
    if name is None:
        return None
    if name not in set(request.app[SERVICE_NAMES]()):
        raise web.HTTPNotFound(reason=f"no service named {name!r}")
    return name


async def get_events(request: web.Request) -> web.Response:
    history = request.app[EVENTS]
    events = history.history(
        after=_int(request, "since", 0, 0, 2**53),
        service=_service(request),
        since_time=_number(request, "since_time"),
        limit=_int(request, "limit", MAX_LIMIT, 1, MAX_LIMIT),
    )
    body: EventsBody = {
        "events": [event_json(e) for e in events],
        "last_id": history.last_id,
        "oldest_id": history.oldest_id(),
    }
    return web.json_response(body)


def sse_frame(event: Event) -> bytes:
    data = dumps(event_json(event))
    return f"id: {event.id}\ndata: {data}\n\n".encode()


def _last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID", request.query.get("last_event_id", ""))
    if not raw:
        return request.app[EVENTS].last_id  # a new client: from now on
    if not raw.isdigit():
        raise bad_request(f"Last-Event-ID: expected an event id, got {raw[:40]!r}")
    return int(raw)


async def get_event_stream(request: web.Request) -> web.StreamResponse:
    """Held events after Last-Event-ID, then live ones; a client too slow to keep up is cut off."""
    history = request.app[EVENTS]
    service = _service(request)
    after = _last_event_id(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )

    async def send(data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT):
            await response.write(data)

    # Subscribe before reading the history, so nothing falls between the two.
    with endless(request), history.subscribe(service) as subscription:
        await response.prepare(request)
        if after < history.oldest_id() - 1:
            missed = {"from": after + 1, "to": history.oldest_id() - 1}
            await send(f"event: gap\ndata: {json.dumps(missed)}\n\n".encode())
        for event in history.history(after=after, service=service):
            await send(sse_frame(event))
            after = event.id
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        event = await subscription.next()
                except TimeoutError:
                    await send(b": keepalive\n\n")
                    continue
                except SubscriberDropped:
                    log.warning("event stream client too slow: dropped", peer=request.remote)
                    break
                if event.id > after:
                    await send(sse_frame(event))
                    after = event.id
    return response


def add_event_routes(
    app: web.Application, events: EventLog, service_names: Callable[[], Iterable[str]]
) -> None:
    app[EVENTS] = events
    app[SERVICE_NAMES] = service_names
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/events/stream", get_event_stream)
    allow_streams(app)
