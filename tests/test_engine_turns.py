"""`engine_turns`: the engine's heavy work goes longest dependency chain first."""

from __future__ import annotations

import asyncio

import pytest
from fake_runtime import settle

from supervisor.engine_turns import EngineTurns, chain_lengths, may_go
from supervisor.graph import DependencyGraph


@pytest.mark.parametrize(
    ("priority", "others", "expected"),
    [
        (3, [], True),  # nothing else: go
        (3, [3, 3], True),  # equal priorities go together (a flat stack starts as before)
        (3, [1, 2], True),  # lower ones never hold it up
        (3, [5], False),  # a longer chain's work goes first
        (0, [0, 0, 1], False),
    ],
)
def test_work_goes_unless_a_longer_chain_waits_or_runs(
    priority: int, others: list[int], expected: bool
) -> None:
    assert may_go(priority, others) is expected


def test_a_service_s_priority_is_the_length_of_its_longest_chain_of_dependents() -> None:
    # db <- migrate <- app <- web, and cache <- app: db heads the longest chain.
    graph = DependencyGraph(
        {"db": [], "cache": [], "migrate": ["db"], "app": ["migrate", "cache"], "web": ["app"]}
    )
    assert chain_lengths(graph) == {"db": 3, "migrate": 2, "cache": 2, "app": 1, "web": 0}


async def test_lower_work_waits_for_higher_work_and_equal_work_goes_together() -> None:
    turns = EngineTurns()
    began: list[str] = []
    done = {name: asyncio.Event() for name in ("db", "cache", "queue")}

    async def work(name: str, priority: int) -> None:
        async with turns.turn(priority):
            began.append(name)
            await done[name].wait()

    tasks = [asyncio.create_task(work("db", 3))]
    await settle()
    tasks += [asyncio.create_task(work(n, 1)) for n in ("cache", "queue")]
    await settle()
    assert began == ["db"]  # both wait while the longer chain's work runs
    done["db"].set()
    await settle()
    assert sorted(began[1:]) == ["cache", "queue"]  # then together, not one by one
    done["cache"].set()
    done["queue"].set()
    await asyncio.gather(*tasks)


async def test_no_work_waits_longer_than_the_cap() -> None:
    turns = EngineTurns(max_wait=0.05)
    stuck = asyncio.Event()

    async def hog() -> None:
        async with turns.turn(5):
            await stuck.wait()  # an image pull, or a wedged engine

    task = asyncio.create_task(hog())
    await settle()
    async with asyncio.timeout(5):
        async with turns.turn(1):
            pass  # went after the cap, not after the hog
    stuck.set()
    await task


async def test_an_exec_probe_waits_behind_a_longer_chain_s_start() -> None:
    turns = EngineTurns(max_wait=30)
    order: list[str] = []
    db_started = asyncio.Event()
    db_may_finish = asyncio.Event()

    async def start_db() -> None:
        async with turns.turn(3):
            db_started.set()
            await db_may_finish.wait()
            order.append("db started")

    async def probe(priority: int, name: str) -> None:
        await turns.behind(priority)
        order.append(name)

    db = asyncio.create_task(start_db())
    await db_started.wait()
    behind = asyncio.create_task(probe(1, "probe of a shorter chain"))
    await probe(3, "probe of an equal chain")  # equal work goes at once
    await settle()
    assert order == ["probe of an equal chain"]  # the shorter chain's probe waits
    db_may_finish.set()
    await asyncio.gather(db, behind)
    assert order[1:] == ["db started", "probe of a shorter chain"]


async def test_a_probe_waits_behind_heavy_work_no_longer_than_the_cap() -> None:
    turns = EngineTurns(max_wait=0.05)
    stuck = asyncio.Event()

    async def hog() -> None:
        async with turns.turn(5):
            await stuck.wait()

    task = asyncio.create_task(hog())
    await settle()
    async with asyncio.timeout(5):
        await turns.behind(0)
    stuck.set()
    await task
