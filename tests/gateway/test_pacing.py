"""Long loops hand the event loop back between slices (gateway.pacing)."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from gateway import pacing
from gateway.bus import Bus
from gateway.pacing import paced
from tests.helpers import event

STREAM = "events"


async def runs_with_a_neighbour(items: list[int], stride: int) -> list[str]:
    """What a paced loop over ``items`` and a task counting loop turns did, in order."""
    done: list[str] = []

    async def neighbour() -> None:
        while True:
            done.append("turn")
            await asyncio.sleep(0)

    task = asyncio.create_task(neighbour())
    await asyncio.sleep(0)
    done.clear()
    async for run in paced(items, stride):
        done.append(f"run {run[0]}")
    task.cancel()
    return done


async def test_a_paced_loop_lets_others_run_between_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pacing, "SLICE", 0.0)  # every run is a slice
    assert await runs_with_a_neighbour(list(range(6)), 2) == [
        "run 0", "turn", "run 2", "turn", "run 4", "turn",
    ]  # fmt: skip
    monkeypatch.setattr(pacing, "SLICE", 60.0)  # the whole loop is one slice
    assert await runs_with_a_neighbour(list(range(6)), 2) == ["run 0", "run 2", "run 4"]


async def test_a_large_read_is_decoded_in_slices(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Bus(bus.client, bus.keys, bus.settings)  # another process's: every entry decoded
    await producer.publish_many(STREAM, [[event(n)] for n in range(20)])
    await bus.ensure_group(STREAM, "g")
    monkeypatch.setattr(pacing, "SLICE", 0.0)
    yielded: list[str] = []
    sleep = asyncio.sleep

    async def noting(delay: float) -> None:
        callers = (f.function for f in inspect.stack()[1:])
        yielded.append(next(name for name in callers if name not in ("__call__", "paced")))
        await sleep(delay)

    monkeypatch.setattr(pacing.asyncio, "sleep", noting)
    entries = await bus.read(STREAM, "g", "c", count=20, block=0.1)
    monkeypatch.setattr(pacing.asyncio, "sleep", sleep)
    assert [e.events[0].event_id for e in entries] == [f"e{n}" for n in range(20)]
    assert yielded.count("read") == 3  # 20 entries, 8 a slice
