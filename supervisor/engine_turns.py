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

Exec probes are light work for the engine but not free: one every 100 ms while a database warms
up keeps it busy enough to slow a start beside it by a fifth to a half (`bench/exec_load.py`).
So an exec probe at the start pace waits behind work of a higher priority too, but holds up
nobody itself.
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
        waits = not may_go(priority, self._busy.elements())
        self._busy[priority] += 1
        try:
            if waits:
                await self._wait_for_turn(priority)
            yield
        finally:
            self._busy[priority] -= 1
            if not self._busy[priority]:
                del self._busy[priority]
            async with self._changed:
                self._changed.notify_all()

    async def behind(self, priority: int) -> None:
        """Wait until no work of a higher priority than `priority` waits or runs, holding
        up nobody: for light work such as an exec probe."""
        if not may_go(priority, self._busy.elements()):
            await self._wait_for_turn(priority)

    async def _wait_for_turn(self, priority: int) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._max_wait), self._changed:
                await self._changed.wait_for(lambda: may_go(priority, self._busy.elements()))


class ServiceTurns:
    """One service's place in the turns, at its priority of the moment (a reload changes it)."""

    def __init__(self, turns: EngineTurns, priority: Callable[[], int]) -> None:
        self._turns = turns
        self._priority = priority

    def turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """A turn for heavy work: a start, a create."""
        return self._turns.turn(self._priority())

    async def behind(self) -> None:
        """Let heavy work of a higher priority go first (see `EngineTurns.behind`)."""
        await self._turns.behind(self._priority())
