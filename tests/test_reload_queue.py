"""Reload requests coalesce: one run at a time, a request during a run queues exactly one more."""

from __future__ import annotations

import asyncio

from supervisor.reload_queue import ReloadQueue


async def test_a_burst_of_requests_coalesces_into_at_most_two_runs() -> None:
    gate = asyncio.Event()

    async def perform() -> int:
        await gate.wait()
        return queue.runs

    queue: ReloadQueue[int] = ReloadQueue(perform)
    server = asyncio.create_task(queue.run())
    try:
        waiters = [asyncio.create_task(queue.request_and_wait()) for _ in range(100)]
        await asyncio.sleep(0)  # let the first run begin
        for _ in range(100):
            queue.request()
        gate.set()
        results = await asyncio.gather(*waiters)
        assert queue.runs <= 2
        assert set(results) <= {1, 2}
    finally:
        server.cancel()


async def test_a_request_during_a_run_is_served_by_a_later_run() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def perform() -> int:
        started.set()
        await release.wait()
        return queue.runs

    queue: ReloadQueue[int] = ReloadQueue(perform)
    server = asyncio.create_task(queue.run())
    try:
        first = asyncio.create_task(queue.request_and_wait())
        await started.wait()
        second = asyncio.create_task(queue.request_and_wait())
        await asyncio.sleep(0)
        release.set()
        assert await first == 1
        assert await second == 2  # not the result of the run that was under way
        assert queue.runs == 2
    finally:
        server.cancel()
