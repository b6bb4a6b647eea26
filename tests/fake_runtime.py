"""A Docker Engine in memory, on a fake clock: what `ServiceRunner` and `Stack` need of one.

Containers are created, started, stopped, killed and removed as on the engine, and every change
arrives on the event stream as the engine would send it. Faults are injected: a start that the
engine refuses (`refuse_start`), a job that exits right after its start (`exit_on_start`), and
an engine that goes away and comes back (`engine_lost`, `engine_back`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from supervisor.config import Probe
from supervisor.docker_api import (
    ContainerEvent,
    ContainerInfo,
    DockerError,
    DockerUnavailable,
    ExecResult,
    ImageNotFound,
    StreamLost,
    StreamReset,
)
from supervisor.probes import ProbeResult, ProbeTarget
from supervisor.spec import ContainerSpec, NetworkSpec, VolumeSpec

# How many loop turns `settle` and `until` give the runners before giving up.
TURNS = 2000


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time stands still until a test moves it with `advance`; timers fire on the way."""

    def __init__(self, start: float = 1000.0, epoch: float = 1_800_000_000.0) -> None:
        self.now = start
        self._epoch = epoch - start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()
        self._ns = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self._epoch + self.now

    def wall_ns(self) -> int:
        # Strictly increasing, as two engine stamps in a row never tie.
        return int(self.wall() * 1e9) + next(self._ns)

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(self.now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_later(delay, wake)
        try:
            await woken
        finally:
            timer.cancel()

    def pending(self) -> list[float]:
        """When the timers still armed are due."""
        return sorted(t.when for _, _, t in self._timers if not t.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time on, firing each timer due on the way (in order) and letting the loop run
        after each, as the real loop would."""
        target = self.now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = when
            timer.callback()
            await settle()
        self.now = target
        await settle()


async def settle(turns: int = 50) -> None:
    """Let every task that can run, run (the fakes never wait on anything real)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], object], what: str) -> None:
    """Give the loop turns until `predicate()` holds; fail naming `what` if it never does."""
    for _ in range(TURNS):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeContainer:
    id: str
    spec: ContainerSpec
    created: str
    running: bool = False
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    starts: int = 0
    address: str = "10.0.0.2"
    labels: dict[str, str] = field(default_factory=dict)

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            id=self.id,
            name=self.spec.name,
            service=self.spec.service,
            config_hash=self.spec.config_hash,
            status="running" if self.running else "exited",
            running=self.running,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            started_at=self.started_at,
            finished_at=self.finished_at,
            addresses={"net": self.address} if self.running else {},
            image_id=self.spec.image,
            labels=dict(self.spec.labels),
            created=self.created,
        )


class FakeRuntime:
    """Implements `supervisor.runtime.StackRuntime` (and so `ContainerRuntime`)."""

    def __init__(self, clock: FakeClock, images: tuple[str, ...] = ()) -> None:
        self.clock = clock
        self.containers: dict[str, FakeContainer] = {}
        self.images: set[str] = set(images)
        self.networks: set[str] = set()
        self.volumes: set[str] = set()
        # What was asked of the engine, e.g. "create db", "start db", "pull db:1".
        self.calls: list[str] = []
        self.inspected: list[str] = []  # names or IDs, in the order asked
        # service -> the error its start fails with (until removed from here)
        self.refuse_start: dict[str, str] = {}
        # service -> exit code right after each start (a job)
        self.exit_on_start: dict[str, int] = {}
        # (service, argv) -> what `exec_in` returns
        self.exec_results: dict[tuple[str, tuple[str, ...]], ExecResult] = {}
        # services whose process ignores its stop signal (only a SIGKILL or the stop call ends it)
        self.ignore_stop_signal: set[str] = set()
        self.down = False
        self._ids = itertools.count(1)
        self._stream: asyncio.Queue[ContainerEvent | StreamReset | StreamLost] = asyncio.Queue()

    # -- what a test does to the engine ---------------------------------------------------

    def container(self, service: str) -> FakeContainer | None:
        return next((c for c in self.containers.values() if c.spec.service == service), None)

    def exit(self, service: str, code: int, *, oom: bool = False) -> None:
        """The service's container ends by itself (crash, job done, OOM kill)."""
        found = self.container(service)
        assert found is not None and found.running, f"{service}: no running container"
        self._ended(found, code, oom)

    def engine_lost(self) -> None:
        self.down = True
        self._stream.put_nowait(StreamLost("engine gone"))

    def engine_back(self) -> None:
        self.down = False
        self._stream.put_nowait(StreamReset(reconnected=True))

    def count(self, call: str) -> int:
        return self.calls.count(call)

    # -- ContainerRuntime -----------------------------------------------------------------

    def _engine(self, what: str) -> None:
        if self.down:
            raise DockerUnavailable(f"{what}: Docker Engine unreachable (fake outage)")

    def _find(self, name_or_id: str) -> FakeContainer | None:
        if name_or_id in self.containers:
            return self.containers[name_or_id]
        return next((c for c in self.containers.values() if c.spec.name == name_or_id), None)

    def _get(self, container_id: str, what: str) -> FakeContainer:
        self._engine(what)
        found = self._find(container_id)
        if found is None:
            raise DockerError(f"{what}: No such container: {container_id}")
        return found

    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        self._engine("inspect")
        self.inspected.append(name_or_id)
        found = self._find(name_or_id)
        return None if found is None else found.info()

    async def image_present(self, image: str) -> bool:
        self._engine("image")
        return image in self.images

    async def pull_image(self, image: str) -> None:
        self._engine("pull")
        self.calls.append(f"pull {image}")
        if image.startswith("missing"):
            raise ImageNotFound(f"pull {image}: not found")
        self.images.add(image)

    async def create_container(self, spec: ContainerSpec) -> str:
        self._engine("create")
        if self._find(spec.name) is not None:
            raise DockerError(f"create {spec.name}: Conflict. The container name is already in use")
        if spec.image not in self.images:
            raise ImageNotFound(f"create {spec.name}: No such image: {spec.image}")
        cid = f"c{next(self._ids):03d}-{spec.service}"
        self.containers[cid] = FakeContainer(cid, spec, created=_stamp(self.clock.wall()))
        self.calls.append(f"create {spec.service}")
        self._emit(self.containers[cid], "create")
        return cid

    async def start_container(self, container_id: str) -> None:
        found = self._get(container_id, "start")
        service = found.spec.service
        self.calls.append(f"start {service}")
        if service in self.refuse_start:
            raise DockerError(f"start {service}: {self.refuse_start[service]}")
        if found.running:
            return
        found.running, found.exit_code, found.oom_killed = True, None, False
        found.started_at = _stamp(self.clock.wall())
        found.starts += 1
        self._emit(found, "start")
        if service in self.exit_on_start:
            code = self.exit_on_start[service]
            asyncio.get_running_loop().call_soon(self._ended_if_running, found, code)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        found = self._get(container_id, "stop")
        self.calls.append(f"stop {found.spec.service}")
        if found.running:
            self._ended(found, 0, False)

    async def kill_container(self, container_id: str, signal: str = "SIGKILL") -> bool:
        found = self._get(container_id, "kill")
        if signal == "SIGKILL":
            self.calls.append(f"kill {found.spec.service}")
        else:
            self.calls.append(f"signal {found.spec.service} {signal}")
        if not found.running:
            return False
        if signal == "SIGKILL" or found.spec.service not in self.ignore_stop_signal:
            self._ended(found, 137 if signal == "SIGKILL" else 0, False)
        return True

    async def remove_container(self, container_id: str) -> None:
        found = self._get(container_id, "remove")
        if found.running:
            raise DockerError(f"remove {found.spec.name}: container is running")
        self.calls.append(f"remove {found.spec.service}")
        del self.containers[found.id]
        self._emit(found, "destroy")

    # -- the rest of StackRuntime ---------------------------------------------------------

    async def ensure_network(self, spec: NetworkSpec) -> bool:
        self._engine("network")
        new = spec.name not in self.networks
        self.networks.add(spec.name)
        return new

    async def ensure_volume(self, spec: VolumeSpec) -> bool:
        self._engine("volume")
        new = spec.name not in self.volumes
        self.volumes.add(spec.name)
        return new

    async def list_project_containers(self, project: str) -> list[ContainerInfo]:
        self._engine("list")
        return [c.info() for c in self.containers.values()]

    async def running_container_ids(self, project: str) -> set[str]:
        self._engine("list")
        return {c.id for c in self.containers.values() if c.running}

    async def exec_in(self, container_id: str, argv: tuple[str, ...]) -> ExecResult:
        found = self._get(container_id, "exec")
        return self.exec_results.get((found.spec.service, argv), ExecResult(0, b""))

    async def events(
        self, project: str
    ) -> AsyncIterator[ContainerEvent | StreamReset | StreamLost]:
        yield StreamReset(reconnected=False)
        while True:
            yield await self._stream.get()

    # -- the engine's side ----------------------------------------------------------------

    def _ended_if_running(self, found: FakeContainer, code: int) -> None:
        if found.running:
            self._ended(found, code, False)

    def _ended(self, found: FakeContainer, code: int, oom: bool) -> None:
        found.running, found.exit_code, found.oom_killed = False, code, oom
        found.finished_at = _stamp(self.clock.wall())
        if oom:
            self._emit(found, "oom")
        self._emit(found, "die", exitCode=str(code))

    def _emit(self, found: FakeContainer, action: str, **attributes: str) -> None:
        self._stream.put_nowait(
            ContainerEvent(
                action=action,
                container_id=found.id,
                name=found.spec.name,
                service=found.spec.service,
                attributes={"name": found.spec.name, **attributes},
                time_ns=self.clock.wall_ns(),
            )
        )


class FakeProber:
    """Probes succeed unless the service is in `failing`."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.failing: set[str] = set()
        self.probed: list[str] = []
        self.probed_at: list[tuple[str, float]] = []  # (service, fake monotonic time)

    async def probe(self, probe: Probe, target: ProbeTarget, timeout: float) -> ProbeResult:
        found = self.runtime.containers.get(target.container_id)
        service = found.spec.service if found is not None else "?"
        self.probed.append(service)
        self.probed_at.append((service, self.runtime.clock.now))
        ok = found is not None and found.running and service not in self.failing
        detail = "ok" if ok else "connection refused"
        return ProbeResult(ok, detail, 0.001, self.runtime.clock.wall())
