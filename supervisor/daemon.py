"""Wiring: config, Docker, probes and the stack in one process, driven by signals."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from supervisor.config import StackConfig
from supervisor.docker_api import DockerRuntime, DockerUnavailable
from supervisor.probes import Prober
from supervisor.stack import Stack, StackError

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1


@dataclass
class ShutdownIntent:
    """Signal handlers only record intent here; the main task acts on it."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self) -> None:
        """First request: stop in order. Any further one: stop now."""
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()


async def wait_for_docker(
    runtime: DockerRuntime, stop: asyncio.Event, *, initial: float = 0.5, maximum: float = 15.0
) -> bool:
    """Wait with backoff until the engine answers; False if a stop came first."""
    delay = initial
    while not stop.is_set():
        try:
            await runtime.ping()
        except DockerUnavailable as exc:
            log.warning("waiting for Docker", error=str(exc), retry_in=round(delay, 2))
            try:
                async with asyncio.timeout(delay):
                    await stop.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, maximum)
        else:
            return True
    return False


async def run_daemon(
    config: StackConfig,
    *,
    runtime: DockerRuntime | None = None,
    shutdown_trigger: Callable[[ShutdownIntent], Coroutine[Any, Any, None]] | None = None,
) -> int:
    """Run the stack until SIGTERM/SIGINT (or the injected trigger); return the exit code."""
    intent = ShutdownIntent()
    loop = asyncio.get_running_loop()
    if shutdown_trigger is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, intent.request)
    runtime = runtime or DockerRuntime()
    trigger = (
        asyncio.create_task(shutdown_trigger(intent), name="shutdown-trigger")
        if shutdown_trigger is not None
        else None
    )
    log.info("starting", project=config.project, services=len(config.services))
    try:
        if not await wait_for_docker(runtime, intent.stop):
            return EXIT_OK
        async with Prober(runtime) as prober:
            await Stack(config, runtime, prober).run(intent.stop, intent.hurry)
    except StackError as exc:
        log.error("stack could not start", error=str(exc))
        return EXIT_FAILURE
    finally:
        if trigger is not None:
            trigger.cancel()
        await runtime.close()
        if shutdown_trigger is None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    log.info("stopped")
    return EXIT_OK
