"""Time as the runner and the stack see it: injected, so tests run on a fake clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A scheduled callback that can be called off."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic time for decisions, wall time for display, and waiting on either."""

    def monotonic(self) -> float: ...

    def wall(self) -> float:
        """Epoch seconds, for display only."""
        ...

    def wall_ns(self) -> int:
        """Epoch nanoseconds: the unit of the engine's event stamps."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer: ...

    async def sleep(self, delay: float) -> None: ...


class SystemClock:
    """The real clocks; timers on the running event loop."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def wall_ns(self) -> int:
        return time.time_ns()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)


SYSTEM_CLOCK = SystemClock()
