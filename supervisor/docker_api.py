"""The only module that imports docker-py: an async facade over the Docker Engine API.

Every blocking call runs in a small dedicated thread pool, never on the event loop. The event
stream runs in its own thread and hands events to the loop with `call_soon_threadsafe`. Callers
get the project's own frozen dataclasses and errors, never docker-py objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
import structlog
from docker.utils.socket import frames_iter

from supervisor.spec import (
    LABEL_CONFIG_HASH,
    LABEL_PROJECT,
    LABEL_SERVICE,
    ContainerSpec,
    NetworkSpec,
    VolumeSpec,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Engine API answers are small; a generous timeout only bounds a wedged engine.
_API_TIMEOUT = 60.0
_STDERR_TAIL = 4096  # how much of a backup or restore command's messages is kept
_CHUNK = 64 * 1024


class DockerError(Exception):
    """A Docker Engine call failed; the message names the object it was about."""


class DockerUnavailable(DockerError):
    """The Docker Engine cannot be reached."""


class ImageNotFound(DockerError):
    """An image is neither present locally nor pullable."""


class ContainerNotFound(DockerError):
    """No container by that name or id (never created, or removed)."""


@dataclass(frozen=True)
class LogOptions:
    """Which part of a container's output to read (as `docker logs` takes it)."""

    tail: int | None = None  # last N lines; None: all
    since: float | None = None  # epoch seconds
    timestamps: bool = False

    def kwargs(self) -> dict[str, Any]:
        return {
            "stdout": True,
            "stderr": True,
            "timestamps": self.timestamps,
            "tail": "all" if self.tail is None else self.tail,
            # Whole seconds: docker-py would send a tiny float in exponent notation, which the
            # engine cannot parse; under a second means "from the start" anyway.
            **({"since": int(self.since)} if self.since and self.since >= 1 else {}),
        }


@dataclass(frozen=True)
class ContainerInfo:
    """What the engine reports about one container."""

    id: str
    name: str
    service: str | None
    config_hash: str | None
    status: str
    running: bool
    exit_code: int | None
    oom_killed: bool
    started_at: str
    finished_at: str
    addresses: Mapping[str, str] = field(default_factory=dict)
    image_id: str = ""  # the image ID the container was created from
    labels: Mapping[str, str] = field(default_factory=dict)
    created: str = ""  # RFC 3339, as the engine reports it

    @property
    def address(self) -> str | None:
        """First IP address the host can use to reach the container."""
        return next((ip for ip in self.addresses.values() if ip), None)


@dataclass(frozen=True)
class ContainerEvent:
    """One container event from the engine's stream."""

    action: str
    container_id: str
    name: str
    service: str | None
    attributes: Mapping[str, str]
    time_ns: int


@dataclass(frozen=True)
class StreamReset:
    """The event stream (re)connected: events may have been missed, re-inspect everything."""

    reconnected: bool


@dataclass(frozen=True)
class StreamLost:
    """The event stream broke: the engine is probably gone (it reconnects by itself)."""

    error: str


@dataclass(frozen=True)
class ExecResult:
    """Outcome of a command run inside a container."""

    exit_code: int
    output: bytes


def _to_info(attrs: Mapping[str, Any]) -> ContainerInfo:
    state = attrs.get("State") or {}
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return ContainerInfo(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        service=labels.get(LABEL_SERVICE),
        config_hash=labels.get(LABEL_CONFIG_HASH),
        status=str(state.get("Status", "unknown")),
        running=bool(state.get("Running", False)),
        exit_code=state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled", False)),
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
        addresses={name: str(net.get("IPAddress") or "") for name, net in networks.items()},
        image_id=str(attrs.get("Image") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        created=str(attrs.get("Created", "")),
    )


def bind_list(spec: ContainerSpec) -> list[str]:
    """Every mount as "source:target:mode", in order: a list, not a map keyed by source, so
    one source mounted twice (or a file that is both a bind and a secret) stays two mounts."""
    return [
        f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"
        for m in (*spec.volume_mounts, *spec.bind_mounts)
    ]


def _translate(exc: Exception, what: str) -> DockerError:
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound(f"{what}: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.APIError):
        return DockerError(f"{what}: {exc.explanation or exc}")
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException):
        return DockerUnavailable(f"{what}: Docker Engine unreachable ({exc})")
    return DockerError(f"{what}: {exc}")


class DockerRuntime:
    """Async facade over one Docker Engine."""

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient] | None = None,
        max_workers: int = 8,
    ) -> None:
        self._factory = client_factory or (lambda: docker.from_env(timeout=int(_API_TIMEOUT)))
        self._client: docker.DockerClient | None = None
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="docker")

    @property
    def _api(self) -> docker.APIClient:
        if self._client is None:
            self._client = self._factory()
        return self._client.api

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except DockerError:
            raise
        except Exception as exc:
            raise _translate(exc, what) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, client.close)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def ping(self) -> None:
        """Raise DockerUnavailable unless the engine answers."""

        # `self._api` inside the thread: creating the client already talks to the engine, so
        # an absent engine must fail there (DockerUnavailable), not on the loop as a crash.
        def ping() -> None:
            self._api.ping()

        await self._call("ping", ping)

    # -- images -------------------------------------------------------------------------

    async def image_present(self, image: str) -> bool:
        def inspect() -> bool:
            try:
                self._api.inspect_image(image)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return False
            return True

        return await self._call(f"image {image}", inspect)

    async def pull_image(self, image: str) -> None:
        """Pull an image, logging a summary rather than per-layer progress."""

        def pull() -> None:
            repo, _, tag = (
                image.rpartition(":")
                if ":" in image.rsplit("/", maxsplit=1)[-1]
                else (image, "", "")
            )
            layers: set[str] = set()
            for line in self._api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in line:
                    raise ImageNotFound(f"image {image}: pull failed: {line['error']}")
                if line.get("id") and line.get("status") == "Pull complete":
                    layers.add(line["id"])
            log.info("image pulled", image=image, layers=len(layers))

        log.info("pulling image", image=image)
        await self._call(f"pull image {image}", pull)

    async def image_id(self, image: str) -> str | None:
        """The ID a reference (or ID) resolves to locally; None when no such image is here."""

        def inspect() -> str | None:
            try:
                attrs = self._api.inspect_image(image)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return None
            return str(attrs["Id"])

        return await self._call(f"image {image}", inspect)

    async def tag_image(self, image: str, repository: str, tag: str) -> None:
        """Give an image (by ID) another name, e.g. so that pruning leaves a rollback target."""
        await self._call(
            f"tag image {image[:19]} as {repository}:{tag}",
            lambda: self._api.tag(image, repository, tag, force=True),
        )

    # -- networks and volumes -------------------------------------------------------------

    async def ensure_network(self, spec: NetworkSpec) -> bool:
        """Create the network unless it exists; True when created."""

        def ensure() -> bool:
            # `names` filters by substring: look for the exact name.
            if any(n["Name"] == spec.name for n in self._api.networks(names=[spec.name])):
                return False
            self._api.create_network(
                spec.name, driver=spec.driver, internal=spec.internal, labels=dict(spec.labels)
            )
            return True

        return await self._call(f"network {spec.name}", ensure)

    async def ensure_volume(self, spec: VolumeSpec) -> bool:
        """Create the named volume unless it exists; True when created."""

        def ensure() -> bool:
            try:
                self._api.inspect_volume(spec.name)
            except docker.errors.NotFound:
                self._api.create_volume(spec.name, driver=spec.driver, labels=dict(spec.labels))
                return True
            return False

        return await self._call(f"volume {spec.name}", ensure)

    async def remove_network(self, name: str) -> None:
        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_network(name)

        await self._call(f"network {name}", remove)

    async def remove_volume(self, name: str) -> None:
        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_volume(name)

        await self._call(f"volume {name}", remove)

    async def list_project_networks(self, project: str) -> list[str]:
        nets = await self._call(
            f"networks of {project}",
            lambda: self._api.networks(filters={"label": f"{LABEL_PROJECT}={project}"}),
        )
        return [n["Name"] for n in nets]

    async def list_project_volumes(self, project: str) -> list[str]:
        answer = await self._call(
            f"volumes of {project}",
            lambda: self._api.volumes(filters={"label": f"{LABEL_PROJECT}={project}"}),
        )
        return [v["Name"] for v in (answer or {}).get("Volumes") or []]

    # -- containers -----------------------------------------------------------------------

    async def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns its id. Docker's restart policy is `no`."""

        def create() -> str:
            api = self._api
            port_bindings: dict[int | str, Any] = {}
            for p in spec.ports:
                key = f"{p.container_port}/{p.protocol}"
                port_bindings.setdefault(key, []).append(
                    (p.host_ip, p.host_port if p.host_port is not None else "")
                )
            binds = bind_list(spec)
            host_config = api.create_host_config(
                binds=binds or None,
                port_bindings=port_bindings or None,
                # This daemon alone decides restarts, so after a reboot the engine cannot
                # bring containers back out of dependency order.
                restart_policy={"Name": "no"},
                init=False,
            )
            first, *others = spec.networks
            endpoints: Any = {first: api.create_endpoint_config(aliases=list(spec.aliases))}
            networking = api.create_networking_config(endpoints)
            created = api.create_container(
                spec.image,
                command=list(spec.command) if spec.command is not None else None,
                entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                name=spec.name,
                environment=dict(spec.environment),
                user=spec.user or None,
                working_dir=spec.working_dir,
                labels=dict(spec.labels),
                stop_signal=spec.stop_signal,
                stop_timeout=int(spec.stop_timeout),
                ports=[(p.container_port, p.protocol) for p in spec.ports] or None,
                host_config=host_config,
                networking_config=networking,
            )
            container_id = str(created["Id"])
            # Engine API 1.41 takes one network at create time; join the rest before start.
            for net in others:
                api.connect_container_to_network(container_id, net, aliases=list(spec.aliases))
            return container_id

        return await self._call(f"create container {spec.name} (image {spec.image})", create)

    async def start_container(self, container_id: str) -> None:
        await self._call(
            f"start container {container_id[:12]}", lambda: self._api.start(container_id)
        )

    async def stop_container(self, container_id: str, timeout: float) -> None:
        """Send the container's stop signal, wait `timeout`, then SIGKILL (the engine does it)."""

        def stop() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._api.stop(container_id, timeout=max(0, round(timeout)))

        await self._call(f"stop container {container_id[:12]}", stop)

    async def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        def kill() -> None:
            try:
                self._api.kill(container_id, signal=signal)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # Killing a container that already exited is not an error for us.
                if exc.status_code != 409:
                    raise

        await self._call(f"kill container {container_id[:12]}", kill)

    async def remove_container(self, container_id: str) -> None:
        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_container(container_id, force=True)

        await self._call(f"remove container {container_id[:12]}", remove)

    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        def inspect() -> ContainerInfo | None:
            try:
                return _to_info(self._api.inspect_container(name_or_id))
            except docker.errors.NotFound:
                return None

        return await self._call(f"inspect container {name_or_id}", inspect)

    async def list_project_containers(self, project: str) -> list[ContainerInfo]:
        def listing() -> list[ContainerInfo]:
            found = self._api.containers(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
            infos = []
            for c in found:
                with contextlib.suppress(docker.errors.NotFound):
                    infos.append(_to_info(self._api.inspect_container(c["Id"])))
            return infos

        return await self._call(f"containers of {project}", listing)

    async def exec_in(self, container_id: str, argv: tuple[str, ...]) -> ExecResult:
        """Run a command inside a running container (used by exec probes)."""

        def run() -> ExecResult:
            exec_id = str(
                self._api.exec_create(container_id, list(argv), stdout=True, stderr=True)["Id"]
            )
            output = self._api.exec_start(exec_id)
            exit_code = self._api.exec_inspect(exec_id).get("ExitCode")
            return ExecResult(exit_code if exit_code is not None else -1, bytes(output or b""))

        return await self._call(f"exec in {container_id[:12]}", run)

    # -- logs -----------------------------------------------------------------------------

    async def container_logs(self, name_or_id: str, options: LogOptions) -> bytes:
        """A container's output so far (also of a stopped or exited one)."""

        def read() -> bytes:
            try:
                return bytes(self._api.logs(name_or_id, stream=False, **options.kwargs()))
            except docker.errors.NotFound:
                raise ContainerNotFound(f"container {name_or_id}: not found") from None

        return await self._call(f"logs of container {name_or_id}", read)

    async def follow_logs(self, name_or_id: str, options: LogOptions) -> AsyncGenerator[bytes]:
        """A container's output, then what it writes from now on, until it exits.

        The stream is read in a thread of its own (not the call pool: a follower may last
        for hours) and handed over through a small queue, so a slow reader slows only its
        own stream. Closing the iterator closes the stream.
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
                stream = self._api.logs(name_or_id, stream=True, follow=True, **options.kwargs())
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
                    hand_over(_translate(exc, f"logs of container {name_or_id}"))
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

    async def exec_to_file(
        self, container_id: str, argv: tuple[str, ...], target: Path
    ) -> ExecResult:
        """Run a command inside a container, streaming its stdout into `target` (a backup).

        The result's `output` is the tail of its stderr, for the error message.
        """

        def run() -> ExecResult:
            api = self._api
            exec_id = str(api.exec_create(container_id, list(argv), stdout=True, stderr=True)["Id"])
            errors = bytearray()
            with target.open("wb") as out:
                for stdout, stderr in api.exec_start(exec_id, stream=True, demux=True):
                    if stdout:
                        out.write(stdout)
                    if stderr:
                        errors.extend(stderr)
                        del errors[:-_STDERR_TAIL]
            exit_code = api.exec_inspect(exec_id).get("ExitCode")
            return ExecResult(exit_code if exit_code is not None else -1, bytes(errors))

        return await self._call(f"exec {argv[0]} in {container_id[:12]}", run)

    async def exec_from_file(
        self, container_id: str, argv: tuple[str, ...], source: Path
    ) -> ExecResult:
        """Run a command inside a container with `source` on its stdin (a restore).

        The result's `output` is the command's output (stdout and stderr), its tail only.
        """

        def run() -> ExecResult:
            api = self._api
            exec_id = str(
                api.exec_create(container_id, list(argv), stdin=True, stdout=True, stderr=True)[
                    "Id"
                ]
            )
            stream = api.exec_start(exec_id, socket=True)
            raw: socket.socket = getattr(stream, "_sock", stream)  # type: ignore[arg-type]
            output = bytearray()

            def drain() -> None:
                # Read while feeding: a command that answers every statement would otherwise
                # fill the socket and stall on its output while we stall on its input.
                for _kind, payload in frames_iter(stream, tty=False):  # type: ignore[no-untyped-call]
                    output.extend(payload)
                    del output[:-_STDERR_TAIL]

            reader = threading.Thread(target=drain, name="exec-output", daemon=True)
            reader.start()
            try:
                with source.open("rb") as feed:
                    while chunk := feed.read(_CHUNK):
                        raw.sendall(chunk)
                raw.shutdown(socket.SHUT_WR)  # end of stdin for the command
                reader.join(_API_TIMEOUT * 10)
            finally:
                stream.close()
            exit_code = api.exec_inspect(exec_id).get("ExitCode")
            return ExecResult(exit_code if exit_code is not None else -1, bytes(output))

        return await self._call(f"exec {argv[0]} in {container_id[:12]}", run)

    # -- events ---------------------------------------------------------------------------

    async def events(
        self, project: str, *, retry_initial: float = 0.25, retry_max: float = 2.0
    ) -> AsyncIterator[ContainerEvent | StreamReset | StreamLost]:
        """The project's container events, reconnecting with backoff when the stream breaks.

        A `StreamReset` is yielded on every (re)connection: events may have been missed, so the
        consumer re-inspects what it manages.
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
                        event = _to_event(raw)
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


def _to_event(raw: Mapping[str, Any]) -> ContainerEvent | None:
    if raw.get("Type") != "container":
        return None
    actor = raw.get("Actor") or {}
    attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    action = str(raw.get("Action") or raw.get("status") or "")
    return ContainerEvent(
        # "health_status: healthy" and "exec_start: sh -c ..." carry detail after a colon.
        action=action.split(":", 1)[0].strip(),
        container_id=str(actor.get("ID") or raw.get("id") or ""),
        name=attributes.get("name", ""),
        service=attributes.get(LABEL_SERVICE),
        attributes=attributes,
        time_ns=int(raw.get("timeNano") or time.time_ns()),
    )
