"""Whether the Docker Engine is known to be there, and the stack's view of it is current.

When the engine goes away, runners stop trying to start things; when it returns, every runner
first re-inspects its container, and only then does anything start again, so dependencies are
judged on what really runs (a database that died with the engine is not taken for healthy).
"""

from __future__ import annotations

import asyncio

import structlog

log = structlog.get_logger(__name__)


class EngineGate:
    """Open while the engine is reachable and the stack has caught up with it."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def lost(self, why: str) -> None:
        """Something found the engine unreachable: hold starts until it is back and resynced."""
        if self._open.is_set():
            log.warning("docker engine lost; holding starts until it is back", error=why)
            self._open.clear()

    def reopen(self) -> None:
        if not self._open.is_set():
            log.info("docker engine back; starts resume")
            self._open.set()

    async def wait_open(self) -> None:
        await self._open.wait()
