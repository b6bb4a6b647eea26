"""Test helpers: bounded waiting on conditions, and small HTTP/Docker conveniences."""

from __future__ import annotations

import asyncio
import http.client
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from docker.models.containers import Container

T = TypeVar("T")

# The run_stand_in fixture: (service="svc", *, env=None, port=8080, **run_kwargs) -> Container.
RunStandIn = Callable[..., Container]

_UNSET = object()


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str,
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Raises AssertionError naming ``message`` and the last value (or exception) at the deadline.
    """
    deadline = time.monotonic() + timeout
    last: object = _UNSET
    while True:
        try:
            last = predicate()
        except Exception as exc:  # a failing probe is just "not yet"
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s: {message} (last value: {last!r})")
        time.sleep(interval)


@overload
def async_wait_until(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str,
) -> Coroutine[Any, Any, T]: ...


@overload
def async_wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str,
) -> Coroutine[Any, Any, T]: ...


def async_wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str,
) -> Coroutine[Any, Any, object]:
    """Async ``wait_until`` (await it): ``predicate`` may be sync or return an awaitable."""
    # A plain def handing back the coroutine: the deadline is a wait-wide bound, not the
    # per-call `timeout` argument that ruff's ASYNC109 warns about on async functions.
    return _poll_async(predicate, limit=timeout, interval=interval, message=message)


async def _poll_async(
    predicate: Callable[[], object], *, limit: float, interval: float, message: str
) -> object:
    deadline = time.monotonic() + limit
    last: object = _UNSET
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            last = value
        except Exception as exc:  # a failing probe is just "not yet"
            last = exc
        else:
            if last:
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {limit}s: {message} (last value: {last!r})")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class HttpReply:
    """Status and body of one HTTP exchange."""

    status: int
    body: str


def http_get(host: str, port: int, path: str, *, timeout: float = 2.0) -> HttpReply:
    """One GET request; connection errors and timeouts propagate as OSError."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return HttpReply(resp.status, resp.read().decode())
    finally:
        conn.close()


def published_port(container: Container, port: int = 8080) -> int:
    """Host port on 127.0.0.1 that Docker published for the container's ``port``/tcp."""
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    raise AssertionError(f"{container.name}: port {port}/tcp not published on 127.0.0.1")


def exit_code(container: Container) -> int | None:
    """The container's exit code once it has exited, else None."""
    container.reload()
    if container.status != "exited":
        return None
    return int(container.attrs["State"]["ExitCode"])
