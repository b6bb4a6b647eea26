"""Where runners publish their services' states, and wait on each other's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from supervisor.model import State

T = TypeVar("T")


class StateBoard:
    """Current state of every service, with waiting on a condition over them."""

    def __init__(self) -> None:
        self._states: dict[str, State] = {}
        self._changed = asyncio.Event()

    def publish(self, service: str, state: State) -> None:
        self._states[service] = state
        # Wake everyone waiting now; later waiters wait on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def state(self, service: str) -> State:
        return self._states.get(service, State.PENDING)

    def snapshot(self) -> dict[str, State]:
        return dict(self._states)

    async def wait_for(self, verdict: Callable[[], T | None]) -> T:
        """Wait until `verdict()` returns something other than None, and return it."""
        # No await between checking and waiting, so no publish can slip in between.
        while (result := verdict()) is None:
            await self._changed.wait()
        return result
