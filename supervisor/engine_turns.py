"""Turns at the engine's heavy work (making networks, starting containers), longest chain first.

On a small host the engine does that work a few at a time: three containers started together
each take about as long as the three started one after another. At a cold start the first wave
then comes up together, late, and the service at the head of the longest dependency chain (the
database everything else waits for) is as late as the one nothing waits for. So such work goes
by priority, the length of the chain of services waiting on it: work waits while work of a
higher priority waits or runs; work of equal priority goes together, so a flat stack (every
priority equal) starts as before. The wait is a head start, not a queue: no wait is longer than
`MAX_WAIT`, about one start on an idle engine, so independent services still overlap when the
engine is slow (under load a start takes seconds) or a start is held up by an image pull.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable

from supervisor.graph import DependencyGraph

MAX_WAIT = 0.4


def may_go(priority: int, others: Iterable[int]) -> bool:
    """Whether work of `priority` may go while work of `others` waits or runs."""
    return all(other <= priority for other in others)


def chain_lengths(graph: DependencyGraph) -> dict[str, int]:
    """Each service's priority: the number of services on its longest chain of dependents."""
    # Reverse levels count up from the services nothing depends on (level 0).
    return {name: level for level, names in enumerate(graph.reverse_levels()) for name in names}


class EngineTurns:
    """Admits heavy engine work in priority order (see the module's docstring)."""

    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        self._max_wait = max_wait
        self._busy: Counter[int] = Counter()  # priority -> work waiting or running
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        """Hold a turn at `priority` for the body's engine work."""
        others = self._busy.copy()
        self._busy[priority] += 1
        try:
            if not may_go(priority, others.elements()):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._max_wait), self._changed:
                        await self._changed.wait_for(self._mine_is_next(priority))
            yield
        finally:
            self._busy[priority] -= 1
            if not self._busy[priority]:
                del self._busy[priority]
            async with self._changed:
                self._changed.notify_all()

    def _mine_is_next(self, priority: int) -> Callable[[], bool]:
        return lambda: may_go(priority, self._busy.elements())
