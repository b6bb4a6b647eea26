"""The Docker facade's long-lived streams: followed logs, the event stream, and the exec
streams of backups and restores.

A followed log or the event stream may last for hours, so each is read in a thread of its own
(never the call pool) and handed to the loop; closing the async iterator ends the thread. The
exec streams are blocking functions that `DockerRuntime` runs in its call pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import structlog
from docker.utils.socket import frames_iter

from supervisor.docker_errors import ContainerNotFound, translate
from supervisor.docker_types import (
    ContainerEvent,
    ExecResult,
    LogOptions,
    StreamLost,
    StreamReset,
    to_event,
)
from supervisor.spec import LABEL_PROJECT

log = structlog.get_logger(__name__)

STDERR_TAIL = 4096  # how much of a backup or restore command's messages is kept
CHUNK = 64 * 1024
RESTORE_OUTPUT_WAIT = 600.0  # how long a restore's output is read after its input ended


async def follow_logs(
    api: Callable[[], docker.APIClient], name_or_id: str, options: LogOptions
) -> AsyncGenerator[bytes]:
    """A container's output, then what it writes from now on, until it exits.

    Handed over through a small queue, so a slow reader slows only its own stream. Closing the
    iterator closes the stream.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=64)
    stopping = threading.Event()
    holder: dict[str, Any] = {}

    def hand_over(item: bytes | Exception | None) -> bool:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                future.result(timeout=0.5)
                return True
        future.cancel()
        return False

    def pump() -> None:
        try:
            stream = api().logs(name_or_id, stream=True, follow=True, **options.kwargs())
            holder["stream"] = stream
            if stopping.is_set():
                stream.close()
                return
            for chunk in stream:
                if not hand_over(bytes(chunk)):
                    return
        except docker.errors.NotFound:
            hand_over(ContainerNotFound(f"container {name_or_id}: not found"))
        except Exception as exc:
            if not stopping.is_set():
                hand_over(translate(exc, f"logs of container {name_or_id}"))
            return
        hand_over(None)

    thread = threading.Thread(target=pump, name=f"docker-logs-{name_or_id}", daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        _stop_pump(stopping, holder)


async def container_events(
    project: str, *, retry_initial: float, retry_max: float
) -> AsyncIterator[ContainerEvent | StreamReset | StreamLost]:
    """The project's container events, reconnecting with backoff when the stream breaks.

    A `StreamReset` is yielded on every (re)connection: events may have been missed, so the
    consumer re-inspects what it manages. The stream has a client of its own, without timeout.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ContainerEvent | StreamReset | StreamLost] = asyncio.Queue()
    stopping = threading.Event()
    holder: dict[str, Any] = {}

    def pump() -> None:
        delay = retry_initial
        connected_before = False
        while not stopping.is_set():
            client = None
            try:
                client = docker.from_env(timeout=None)  # type: ignore[arg-type]
                stream = client.api.events(
                    decode=True,
                    filters={"type": "container", "label": f"{LABEL_PROJECT}={project}"},
                )
                holder["stream"] = stream
                if stopping.is_set():
                    stream.close()
                    break
                loop.call_soon_threadsafe(queue.put_nowait, StreamReset(connected_before))
                connected_before = True
                delay = retry_initial
                for raw in stream:
                    event = to_event(raw)
                    if event is not None:
                        loop.call_soon_threadsafe(queue.put_nowait, event)
                if stopping.is_set():
                    break
                # A stopping engine ends the stream cleanly: that is a lost link too.
                log.warning("docker event stream ended", retry_in=delay)
                loop.call_soon_threadsafe(queue.put_nowait, StreamLost("event stream ended"))
            except Exception as exc:
                if stopping.is_set():
                    break
                log.warning("docker event stream broken", error=str(exc), retry_in=delay)
                loop.call_soon_threadsafe(queue.put_nowait, StreamLost(str(exc)))
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            if stopping.wait(delay):
                break
            delay = min(delay * 2, retry_max)

    thread = threading.Thread(target=pump, name=f"docker-events-{project}", daemon=True)
    thread.start()
    try:
        while True:
            yield await queue.get()
    finally:
        _stop_pump(stopping, holder)


def _stop_pump(stopping: threading.Event, holder: Mapping[str, Any]) -> None:
    """End a stream-reading thread: closing its stream wakes a read blocked on it."""
    stopping.set()
    stream = holder.get("stream")
    if stream is not None:
        with contextlib.suppress(Exception):
            stream.close()


def exec_to_file(
    api: docker.APIClient, container_id: str, argv: tuple[str, ...], target: Path
) -> ExecResult:
    """Run a command inside a container, streaming its stdout into `target` (a backup).

    Blocking. The result's `output` is the tail of its stderr, for the error message.
    """
    exec_id = str(api.exec_create(container_id, list(argv), stdout=True, stderr=True)["Id"])
    errors = bytearray()
    with target.open("wb") as out:
        for stdout, stderr in api.exec_start(exec_id, stream=True, demux=True):
            if stdout:
                out.write(stdout)
            if stderr:
                errors.extend(stderr)
                del errors[:-STDERR_TAIL]
    exit_code = api.exec_inspect(exec_id).get("ExitCode")
    return ExecResult(exit_code if exit_code is not None else -1, bytes(errors))


def exec_from_file(
    api: docker.APIClient, container_id: str, argv: tuple[str, ...], source: Path
) -> ExecResult:
    """Run a command inside a container with `source` on its stdin (a restore).

    Blocking. The result's `output` is the command's output (stdout and stderr), its tail only.
    """
    exec_id = str(
        api.exec_create(container_id, list(argv), stdin=True, stdout=True, stderr=True)["Id"]
    )
    stream = api.exec_start(exec_id, socket=True)
    raw: socket.socket = getattr(stream, "_sock", stream)  # type: ignore[arg-type]
    output = bytearray()

    def drain() -> None:
        # Read while feeding: a command that answers every statement would otherwise fill the
        # socket and stall on its output while we stall on its input.
        for _kind, payload in frames_iter(stream, tty=False):  # type: ignore[no-untyped-call]
            output.extend(payload)
            del output[:-STDERR_TAIL]

    reader = threading.Thread(target=drain, name="exec-output", daemon=True)
    reader.start()
    try:
        with source.open("rb") as feed:
            while chunk := feed.read(CHUNK):
                raw.sendall(chunk)
        raw.shutdown(socket.SHUT_WR)  # end of stdin for the command
        reader.join(RESTORE_OUTPUT_WAIT)
    finally:
        stream.close()
    exit_code = api.exec_inspect(exec_id).get("ExitCode")
    return ExecResult(exit_code if exit_code is not None else -1, bytes(output))
