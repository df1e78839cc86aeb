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


async def runs_with_a_neighbour(loops: dict[str, list[int]], stride: int) -> list[str]:
    """What paced loops over ``loops`` (name → items) and a task counting passes of the event
    loop (a stand-in for a request) did, in order."""
    done: list[str] = []

    async def neighbour() -> None:
        while True:
            done.append("turn")
            await asyncio.sleep(0)

    async def run(name: str, items: list[int]) -> None:
        async for part in paced(items, stride):
            done.append(f"{name} {part[0]}")

    task = asyncio.create_task(neighbour())
    await asyncio.sleep(0)
    done.clear()
    await asyncio.gather(*(run(name, items) for name, items in loops.items()))
    task.cancel()
    runs = [n for n, step in enumerate(done) if step != "turn"]
    done = done[runs[0] : runs[-1] + 1]  # the passes before the first run and after the last
    return [step for n, step in enumerate(done) if step != "turn" or done[n - 1] != "turn"]


async def test_a_paced_loop_lets_others_run_between_slices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pacing, "SLICE", 0.0)  # every run is a slice
    assert await runs_with_a_neighbour({"a": list(range(6))}, 2) == [
        "a 0", "turn", "a 2", "turn", "a 4",
    ]  # fmt: skip
    monkeypatch.setattr(pacing, "SLICE", 60.0)  # the whole loop is one slice
    assert await runs_with_a_neighbour({"a": list(range(6))}, 2) == ["a 0", "a 2", "a 4"]


async def test_paced_loops_take_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two paced loops (two batches in hand) and a request: the request waits for one slice
    at a time, not for a slice of each loop; the loops go on in the order they gave way."""
    monkeypatch.setattr(pacing, "SLICE", 0.0)
    assert await runs_with_a_neighbour({"a": list(range(6)), "b": list(range(6))}, 2) == [
        "a 0", "b 0", "turn", "a 2", "turn", "b 2", "turn", "a 4", "turn", "b 4",
    ]  # fmt: skip


async def test_a_large_read_is_decoded_in_slices(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Bus(bus.client, bus.keys, bus.settings)  # another process's: every entry decoded
    await producer.publish_many(STREAM, [[event(n)] for n in range(20)])
    await bus.ensure_group(STREAM, "g")
    monkeypatch.setattr(pacing, "SLICE", 0.0)
    yielded: list[str] = []
    turn = pacing.turn

    async def noting() -> None:
        callers = (f.function for f in inspect.stack()[1:])
        yielded.append(next(name for name in callers if name not in ("__call__", "paced")))
        await turn()

    monkeypatch.setattr(pacing, "turn", noting)
    entries = await bus.read(STREAM, "g", "c", count=20, block=0.1)
    monkeypatch.setattr(pacing, "turn", turn)
    assert [e.events[0].event_id for e in entries] == [f"e{n}" for n in range(20)]
    assert yielded.count("_read_part") == 3  # 20 entries, 8 a slice


async def test_a_loop_cancelled_while_waiting_its_turn_does_not_hold_up_the_others() -> None:
    first = asyncio.create_task(pacing.turn())
    second = asyncio.create_task(pacing.turn())
    await asyncio.sleep(0)  # both wait in line now
    first.cancel()
    await asyncio.wait_for(second, timeout=5)  # it goes on: the cancelled one is skipped
    assert first.cancelled()
    await pacing.turn()  # and the line works afterwards
