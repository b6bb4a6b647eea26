"""The Docker facade: `DockerRuntime`, an async front over the Docker Engine API.

Only the `docker_*` modules import docker-py: this one (calls), `docker_streams` (followed
logs, the event stream, exec streams), `docker_errors`; `docker_types` holds the frozen value
types they hand out. Every blocking call runs in a small dedicated thread pool, never on the
event loop; a stream runs in a thread of its own and hands over to the loop. Callers get the
project's own dataclasses and errors, never docker-py objects; import them from here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import structlog

from supervisor import docker_streams
from supervisor.docker_errors import (
    ContainerNotFound,
    DockerError,
    DockerUnavailable,
    ImageNotFound,
    translate,
)
from supervisor.docker_types import (
    ContainerEvent,
    ContainerInfo,
    ExecResult,
    LogOptions,
    StreamLost,
    StreamReset,
    to_info,
)
from supervisor.spec import LABEL_PROJECT, ContainerSpec, NetworkSpec, VolumeSpec

__all__ = [
    "ContainerEvent",
    "ContainerInfo",
    "ContainerNotFound",
    "DockerError",
    "DockerRuntime",
    "DockerUnavailable",
    "ExecResult",
    "ImageNotFound",
    "LogOptions",
    "StreamLost",
    "StreamReset",
    "bind_list",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Engine API answers are small; a generous timeout only bounds a wedged engine.
_API_TIMEOUT = 60.0


def bind_list(spec: ContainerSpec) -> list[str]:
    """Every mount as "source:target:mode", in order: a list, not a map keyed by source, so
    one source mounted twice (or a file that is both a bind and a secret) stays two mounts."""
    return [
        f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"
        for m in (*spec.volume_mounts, *spec.bind_mounts)
    ]


class DockerRuntime:
    """Async facade over one Docker Engine."""

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient] | None = None,
        max_workers: int = 8,
        signal_workers: int = 32,
    ) -> None:
        self._factory = client_factory or (
            lambda: docker.from_env(
                timeout=int(_API_TIMEOUT), max_pool_size=max_workers + signal_workers
            )
        )
        self._client: docker.DockerClient | None = None
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="docker")
        # Signals are quick calls that come in bursts (a whole stack's stop signals at once at
        # shutdown): their own, wider pool, so they go out together and never queue behind a
        # slow create or exec. Its threads are made only when a burst needs them.
        self._signal_pool = ThreadPoolExecutor(
            max_workers=signal_workers, thread_name_prefix="docker-signal"
        )

    @property
    def _api(self) -> docker.APIClient:
        if self._client is None:
            self._client = self._factory()
        return self._client.api

    async def _call(
        self, what: str, fn: Callable[[], T], pool: ThreadPoolExecutor | None = None
    ) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool or self._pool, fn)
        except DockerError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, client.close)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._signal_pool.shutdown(wait=False, cancel_futures=True)

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

    async def kill_container(self, container_id: str, signal: str = "SIGKILL") -> bool:
        """Send `signal` to the container's main process; False if it was not running."""

        def kill() -> bool:
            try:
                self._api.kill(container_id, signal=signal)
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as exc:
                # A container that already exited is not an error for us.
                if exc.status_code != 409:
                    raise
                return False
            return True

        return await self._call(
            f"kill container {container_id[:12]} ({signal})", kill, self._signal_pool
        )

    async def remove_container(self, container_id: str) -> None:
        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._api.remove_container(container_id, force=True)

        await self._call(f"remove container {container_id[:12]}", remove)

    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        def inspect() -> ContainerInfo | None:
            try:
                return to_info(self._api.inspect_container(name_or_id))
            except docker.errors.NotFound:
                return None

        return await self._call(f"inspect container {name_or_id}", inspect)

    async def running_container_ids(self, project: str) -> set[str]:
        """IDs of the project's running containers: one listing, no inspect per container."""

        def listing() -> set[str]:
            found = self._api.containers(
                quiet=True, filters={"label": f"{LABEL_PROJECT}={project}"}
            )
            return {str(c["Id"]) for c in found}

        return await self._call(f"running containers of {project}", listing)

    async def list_project_containers(self, project: str) -> list[ContainerInfo]:
        def listing() -> list[ContainerInfo]:
            found = self._api.containers(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
            infos = []
            for c in found:
                with contextlib.suppress(docker.errors.NotFound):
                    infos.append(to_info(self._api.inspect_container(c["Id"])))
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

    def follow_logs(self, name_or_id: str, options: LogOptions) -> AsyncGenerator[bytes]:
        """A container's output, then what it writes until it exits (`docker_streams`)."""
        return docker_streams.follow_logs(lambda: self._api, name_or_id, options)

    # -- backups and restores -------------------------------------------------------------

    async def exec_to_file(
        self, container_id: str, argv: tuple[str, ...], target: Path
    ) -> ExecResult:
        """Run a command inside a container, its stdout into `target`; output: stderr's tail."""
        return await self._call(
            f"exec {argv[0]} in {container_id[:12]}",
            lambda: docker_streams.exec_to_file(self._api, container_id, argv, target),
        )

    async def exec_from_file(
        self, container_id: str, argv: tuple[str, ...], source: Path
    ) -> ExecResult:
        """Run a command inside a container, `source` on its stdin; output: its output's tail."""
        return await self._call(
            f"exec {argv[0]} in {container_id[:12]}",
            lambda: docker_streams.exec_from_file(self._api, container_id, argv, source),
        )

    # -- events ---------------------------------------------------------------------------

    def events(
        self, project: str, *, retry_initial: float = 0.25, retry_max: float = 2.0
    ) -> AsyncIterator[ContainerEvent | StreamReset | StreamLost]:
        """The project's container events, reconnecting with backoff (`docker_streams`)."""
        return docker_streams.container_events(
            project, retry_initial=retry_initial, retry_max=retry_max
        )
