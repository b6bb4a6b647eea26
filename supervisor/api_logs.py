"""The API's log endpoints: a service's container output (`GET /v1/services/{name}/logs`) and
its live continuation (`GET /v1/services/{name}/logs/stream`), read through the engine.

The CLI's `logs` goes through here rather than to the engine itself: Docker access stays in the
daemon (the CLI user needs no membership of the docker group, which is root-equivalent), and
the same access rules apply as to every other API call. A stopped or crashed container's
output, and a completed job's, are there as long as the container is (the daemon keeps them).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Protocol

from aiohttp import web

from supervisor.api_events import allow_streams, bad_request, endless
from supervisor.config import NAME_RE, StackConfig
from supervisor.docker_api import ContainerNotFound, DockerError, LogOptions
from supervisor.spec import resource_name
from supervisor.status import ServiceStatus

MAX_TAIL = 1_000_000


class LogReader(Protocol):
    """The part of the Docker facade that reads container output."""

    async def container_logs(self, name_or_id: str, options: LogOptions) -> bytes: ...
    def follow_logs(self, name_or_id: str, options: LogOptions) -> AsyncGenerator[bytes]: ...


# A service's container (id, or name when none was seen yet); KeyError for an unknown service.
ContainerOf = Callable[[str], str]

READER = web.AppKey("log_reader", LogReader)
CONTAINER_OF: web.AppKey[ContainerOf] = web.AppKey("container_of")


def log_options(request: web.Request) -> LogOptions:
    """`tail` (lines), `since` (epoch seconds, or a duration back from now such as 10m) and
    `timestamps` (true/false) from the query."""
    query = request.query
    tail: int | None = None
    if (raw := query.get("tail")) is not None and raw != "all":
        if not raw.isdigit() or int(raw) > MAX_TAIL:
            raise bad_request(f"query parameter tail: expected 0..{MAX_TAIL} or all, got {raw!r}")
        tail = int(raw)
    since: float | None = None
    if (raw := query.get("since")) is not None:
        try:
            since = float(raw)
        except ValueError:
            message = f"query parameter since: expected epoch seconds, got {raw!r}"
            raise bad_request(message) from None
        if not 0 <= since < 1e11:
            raise bad_request(f"query parameter since: out of range, got {raw!r}")
    stamps = query.get("timestamps", "false")
    if stamps not in ("true", "false"):
        raise bad_request(f"query parameter timestamps: expected true or false, got {stamps!r}")
    return LogOptions(tail=tail, since=since, timestamps=stamps == "true")


def _container(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME_RE.match(name):
        raise bad_request(f"invalid service name {name!r}")
    try:
        return request.app[CONTAINER_OF](name)
    except KeyError:
        raise web.HTTPNotFound(reason=f"no service named {name!r}") from None


def _not_there(request: web.Request) -> web.HTTPNotFound:
    name = request.match_info["name"]
    return web.HTTPNotFound(reason=f"service {name!r} has no container (not created yet)")


async def get_logs(request: web.Request) -> web.Response:
    container, options = _container(request), log_options(request)
    try:
        output = await request.app[READER].container_logs(container, options)
    except ContainerNotFound:
        raise _not_there(request) from None
    except DockerError as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc).replace("\n", " ")) from None
    return web.Response(body=output, content_type="text/plain", charset="utf-8")


async def get_log_stream(request: web.Request) -> web.StreamResponse:
    """The output so far (per `tail`/`since`), then until the container exits or the client
    goes. The container is looked up first, so a missing one is a 404, not an empty 200."""
    container, options = _container(request), log_options(request)
    reader = request.app[READER]
    try:
        await reader.container_logs(container, LogOptions(tail=0))
    except ContainerNotFound:
        raise _not_there(request) from None
    except DockerError as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc).replace("\n", " ")) from None
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    with endless(request):
        await response.prepare(request)
        chunks = reader.follow_logs(container, options)
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except (DockerError, ConnectionResetError):
            pass  # the engine away or the client gone: end the stream
        finally:
            await chunks.aclose()
    return response


def containers_of(
    config: Callable[[], StackConfig], statuses: Callable[[], Iterable[ServiceStatus]]
) -> ContainerOf:
    """A service's current container: the one the daemon runs (or ran last), else the name
    the daemon gives it (a job that completed before the daemon restarted, say)."""

    def container_of(service: str) -> str:
        current = config()
        if service not in current.services:
            raise KeyError(service)
        known = next((s.container_id for s in statuses() if s.name == service), None)
        return known or resource_name(current.project, service)

    return container_of


def add_log_routes(app: web.Application, reader: LogReader, container_of: ContainerOf) -> None:
    app[READER] = reader
    app[CONTAINER_OF] = container_of
    app.router.add_get("/v1/services/{name}/logs", get_logs)
    app.router.add_get("/v1/services/{name}/logs/stream", get_log_stream)
    allow_streams(app)
