"""Stopping a container at shutdown by its stop signal and its `die` event.

The engine answers a stop call only after its clean-up (network, mounts), several times longer
than the exit itself under load; the next level of the stack (and, after the last, the daemon's
exit) need only the exit. So at shutdown a container gets its signal through the engine's
`kill`, which returns at once, and counts as stopped at its `die` event; the clean-up runs in
the engine on its own (the container has exited before its `die` is sent). No worker thread
waits out a grace period, so a large stack's containers all get their signal together.
"""

from __future__ import annotations

import asyncio

import structlog

from supervisor.clock import Clock
from supervisor.config import StopConfig
from supervisor.docker_errors import DockerError
from supervisor.runtime import ContainerRuntime

# How long a SIGKILLed container's `die` may take before the engine's own stop call is asked
# to wait for the exit (only when the event stream lost it).
KILLED_WITHIN = 5.0


class DieWatch:
    """The one `die` event a runner's shutdown stop is waiting for, if any."""

    def __init__(self) -> None:
        # (container id, signal sent at ns, future)
        self._wanted: tuple[str, int, asyncio.Future[None]] | None = None

    def died(self, container_id: str, at_ns: int) -> None:
        """The engine reported a `die` (from the runner's event hand-off)."""
        wanted = self._wanted
        if wanted and wanted[0] == container_id and at_ns >= wanted[1] and not wanted[2].done():
            wanted[2].set_result(None)

    async def signal_and_wait(
        self,
        runtime: ContainerRuntime,
        clock: Clock,
        container_id: str,
        signal: str,
        within: float,
    ) -> bool:
        """Send `signal`: True once the container's `die` arrives within `within` seconds, or
        at once if it was not running."""
        died: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wanted = (container_id, clock.wall_ns(), died)
        timer = asyncio.ensure_future(clock.sleep(within))
        try:
            if not await runtime.kill_container(container_id, signal):
                return True
            await asyncio.wait({died, timer}, return_when=asyncio.FIRST_COMPLETED)
            return died.done()
        finally:
            self._wanted = None
            timer.cancel()


async def stop_at_shutdown(
    runtime: ContainerRuntime,
    clock: Clock,
    watch: DieWatch,
    container_id: str,
    stop: StopConfig,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """The stop signal, and its `die` taken as stopped; past `stop.timeout` SIGKILL; with no
    `die` even then (the event stream lost), or no signal sent, the engine's stop call, which
    waits for the exit itself."""
    timeout = stop.timeout
    try:
        if await watch.signal_and_wait(runtime, clock, container_id, stop.signal, timeout):
            return
        log.warning("still running after its stop timeout; killing it")
        timeout = 0
        if await watch.signal_and_wait(runtime, clock, container_id, "SIGKILL", KILLED_WITHIN):
            return
    except DockerError as exc:
        log.warning("signal not sent; the engine's stop instead", error=str(exc))
    await runtime.stop_container(container_id, timeout)
