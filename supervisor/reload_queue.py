"""Coalescing reload requests: one reload at a time, and a request during one queues one more."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

R = TypeVar("R")


class ReloadQueue(Generic[R]):
    """Turns any burst of requests into as few runs of `perform` as possible.

    A request made while a run is under way is served by exactly one further run; a waiter
    always gets the result of a run that began after its request.
    """

    def __init__(self, perform: Callable[[], Awaitable[R]]) -> None:
        self._perform = perform
        self._requested = 0  # tickets handed out
        self._waiting: list[tuple[int, asyncio.Future[R]]] = []
        self._wanted = asyncio.Event()
        self.runs = 0

    def request(self) -> int:
        """Ask for a reload (from a signal handler or a file watcher); returns the ticket."""
        self._requested += 1
        self._wanted.set()
        return self._requested

    async def request_and_wait(self) -> R:
        """Ask for a reload and wait for the result of the first run that covers this request."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((self.request(), future))
        return await future

    async def run(self) -> None:
        """Serve requests until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            covered = self._requested  # everything asked for so far is covered by this run
            self.runs += 1
            served = [f for ticket, f in self._waiting if ticket <= covered]
            self._waiting = [(t, f) for t, f in self._waiting if t > covered]
            try:
                result = await self._perform()
            except Exception as exc:
                for future in served:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future in served:
                if not future.done():
                    future.set_result(result)
