"""The agent runtime on a real Redis: ack after the handler, retries, dead letters, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from gateway import keys as K
from gateway.agents import counts
from gateway.agents.runtime import Agent, Backoff
from gateway.bus import Bus, Entry
from gateway.errors import BusUnavailable
from gateway.keys import Keys
from tests.conftest import ROOT
from tests.helpers import event, eventually

FAST = Backoff(base=0.001, cap=0.01)


async def run_until(agent: Agent, condition: object) -> None:
    task = asyncio.create_task(agent.run())
    try:
        await eventually(condition)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


async def test_acks_only_after_the_handler_returned(bus: Bus) -> None:
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(20)])
    seen: list[str] = []
    pending_during_handler: list[int] = []

    async def handler(entries: Sequence[Entry]) -> None:
        stats = await bus.stats()
        pending_during_handler.append(stats["streams"][K.EVENTS]["groups"]["g"]["pending"])
        seen.extend(e.events[0].event_id for e in entries)

    agent = Agent("g", handler, bus, stream=K.EVENTS, backoff=FAST)
    await run_until(agent, lambda: len(seen) == 20)
    assert pending_during_handler[0] > 0
    assert (await bus.stats())["streams"][K.EVENTS]["groups"]["g"]["pending"] == 0
    assert agent.stats.acked == 20


async def test_a_poison_entry_is_dead_lettered_and_the_others_go_through(bus: Bus) -> None:
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(10)])
    done: set[str] = set()

    async def handler(entries: Sequence[Entry]) -> None:
        if any(e.events[0].event_id == "e4" for e in entries):
            raise ValueError("cannot handle e4")
        done.update(e.events[0].event_id for e in entries)

    agent = Agent("g", handler, bus, stream=K.EVENTS, backoff=FAST)
    # Until the poison entry is set aside and the nine others are handled and acknowledged
    # (the retries entry by entry may come after the dead-lettering).
    await run_until(agent, lambda: agent.stats.dead_lettered == 1 and agent.stats.acked >= 9)
    assert done == {f"e{i}" for i in range(10)} - {"e4"}
    stream = (await bus.stats())["streams"][K.EVENTS]
    assert stream["dead_letter"] == 1
    assert stream["groups"]["g"]["pending"] == 0
    assert "cannot handle e4" in agent.stats.last_error


async def test_an_entry_that_does_not_decode_is_dead_lettered_with_its_bytes(bus: Bus) -> None:
    broken = b"\xc1 not msgpack"
    await bus.add_packed([(K.EVENTS, broken)])
    await bus.publish(K.EVENTS, [event(1)])
    handled: list[Entry] = []

    async def handler(entries: Sequence[Entry]) -> None:
        handled.extend(entries)

    agent = Agent("g", handler, bus, stream=K.EVENTS, backoff=FAST)
    await run_until(agent, lambda: agent.stats.dead_lettered == 1 and agent.stats.acked == 1)
    assert [[x.event_id for x in e.events] for e in handled] == [["e1"]]
    (dead,) = await bus.dead_letters(K.EVENTS)
    assert (dead.group, dead.events, dead.reason) == ("g", 0, "entry does not hold packed events")
    [(_, fields)] = await bus.client.xrange(bus.keys.dead_letter(K.EVENTS))
    assert fields[K.ENTRY_FIELD] == broken  # kept, to see what was sent


async def test_a_dead_letter_put_back_goes_to_its_group_and_the_others_acknowledge_it(
    bus: Bus,
) -> None:
    """After the cause is fixed, ``Bus.redrive`` puts the entry back once: the group that gave
    up handles it, another group that handled it before acknowledges it unread."""
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(3)])
    poison = True
    done: dict[str, list[str]] = {"g": [], "other": []}

    def handler(group: str) -> Callable[[Sequence[Entry]], Any]:
        async def handle(entries: Sequence[Entry]) -> None:
            ids = [e.events[0].event_id for e in entries]
            if group == "g" and poison and "e1" in ids:
                raise ValueError("cannot handle e1")
            done[group] += ids

        return handle

    g = Agent("g", handler("g"), bus, stream=K.EVENTS, backoff=FAST)
    other = Agent("other", handler("other"), bus, stream=K.EVENTS, backoff=FAST)
    await run_until(g, lambda: g.stats.dead_lettered == 1 and g.stats.acked >= 2)
    await run_until(other, lambda: other.stats.acked == 3)
    (dead,) = await bus.dead_letters(K.EVENTS)
    assert (dead.group, dead.events, dead.deliveries) == ("g", 1, 1)
    assert "cannot handle e1" in dead.reason
    poison = False  # the cause fixed
    (moved,) = await bus.redrive(K.EVENTS, [dead.id])
    assert moved[0] == dead.id
    assert await bus.redrive(K.EVENTS, [dead.id]) == []  # it left the dead letters: once only
    assert await bus.dead_letters(K.EVENTS) == []

    async def settled(group: str) -> bool:
        groups = (await bus.stats())["streams"][K.EVENTS]["groups"]
        return bool(groups[group]["pending"] == 0 and groups[group]["lag"] == 0)

    g = Agent("g", handler("g"), bus, stream=K.EVENTS, backoff=FAST)  # run again
    other = Agent("other", handler("other"), bus, stream=K.EVENTS, backoff=FAST)
    await run_until(g, lambda: done["g"].count("e1") == 1)
    await run_until(other, lambda: settled("other"))
    assert sorted(done["g"]) == ["e0", "e1", "e2"]
    assert sorted(done["other"]) == ["e0", "e1", "e2"]  # not handled again
    assert await settled("g")


async def test_transient_handler_errors_retry_without_dead_lettering(bus: Bus) -> None:
    await bus.publish(K.EVENTS, [event(1)])
    calls = 0

    async def flaky(entries: Sequence[Entry]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 6:  # more failures than bus.max_deliveries (3 here)
            raise BusUnavailable("warehouse away")

    agent = Agent("g", flaky, bus, stream=K.EVENTS, backoff=FAST)
    await run_until(agent, lambda: agent.stats.acked == 1)
    assert calls == 7
    assert agent.stats.dead_lettered == 0


async def test_stop_lets_the_batch_in_hand_finish(bus: Bus) -> None:
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(5)])
    entered, release = asyncio.Event(), asyncio.Event()
    handled: list[int] = []

    async def slow(entries: Sequence[Entry]) -> None:
        entered.set()
        await release.wait()
        handled.append(len(entries))

    agent = Agent("g", slow, bus, stream=K.EVENTS, backoff=FAST)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(entered.wait(), 10)
    agent.stop()
    release.set()
    await asyncio.wait_for(task, 10)
    assert handled == [5]
    assert (await bus.stats())["streams"][K.EVENTS]["groups"]["g"]["pending"] == 0


async def test_sigkilled_consumer_mid_batch_everything_counted_exactly_once(
    bus: Bus, client: aioredis.Redis, redis_url: str, prefix: str
) -> None:
    channels = ["web", "pos", "email", "kiosk"]
    sent = [event(i, channel=channels[i % 4]) for i in range(1000)]
    await bus.ensure_group(K.EVENTS, "channel-counts")
    await bus.publish_many(K.EVENTS, [sent[i : i + 10] for i in range(0, 1000, 10)])

    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.gateway.crashing_consumer", redis_url, prefix,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        await eventually(lambda: client.exists(f"{prefix}:crash-marker"))
        partial = await counts.read(client, bus.keys)
        assert 0 < sum(partial.values()) < 1000  # it died having counted part of its batch
    finally:
        doomed.send_signal(signal.SIGKILL)
        await doomed.wait()

    survivor = Agent(
        "channel-counts", counts.handler(client, bus.keys), bus, stream=K.EVENTS, backoff=FAST
    )

    async def all_acked() -> bool:
        group = (await bus.stats())["streams"][K.EVENTS]["groups"]["channel-counts"]
        return group["pending"] == 0 and group["lag"] == 0

    await run_until(survivor, all_acked)
    assert survivor.stats.reclaimed > 0  # the dead member's batch was taken over...
    assert await counts.read(client, bus.keys) == {c: 250 for c in channels}  # ...once each


async def test_a_handler_that_holds_connections_is_closed_when_its_agent_stops(bus: Bus) -> None:
    class Holding:
        def __init__(self) -> None:
            self.handled = 0
            self.closed = False

        async def __call__(self, entries: Sequence[Entry]) -> None:
            assert not self.closed
            self.handled += len(entries)

        async def close(self) -> None:
            self.closed = True

    await bus.publish(K.EVENTS, [event(1)])
    handler = Holding()
    agent = Agent("g", handler, bus, stream=K.EVENTS, backoff=FAST)
    await run_until(agent, lambda: handler.handled == 1)
    assert handler.closed


class Gated:
    """A handler that keeps each batch in hand until its gate opens, two batches at a time."""

    batches_in_flight = 2

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gates = [asyncio.Event() for _ in range(10)]

    async def __call__(self, entries: Sequence[Entry]) -> None:
        gate = self.gates[len(self.calls)]
        self.calls.append([e.events[0].event_id for e in entries])
        await gate.wait()


async def test_an_overlapping_handler_gets_the_next_batch_while_one_is_in_hand(
    client: aioredis.Redis, prefix: str, make_config: Callable[..., Any]
) -> None:
    config = make_config("", prefix, "[bus]\nbatch = 2\nclaim_idle = 60\nblock = 0.05")
    bus = Bus(client, Keys(prefix), config.bus)
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(6)])
    handler = Gated()
    agent = Agent("g", handler, bus, stream=K.EVENTS, backoff=FAST)
    task = asyncio.create_task(agent.run())

    async def group() -> dict[str, Any]:
        return dict((await bus.stats())["streams"][K.EVENTS]["groups"]["g"])

    await eventually(lambda: len(handler.calls) == 2)
    assert (await group())["pending"] == 4  # two batches in hand; the third not read
    handler.gates[1].set()  # the second ends first: acknowledged on its own
    await eventually(lambda: agent.stats.acked == 2)
    assert (await group())["pending"] == 2 and len(handler.calls) == 2
    handler.gates[0].set()
    await eventually(lambda: len(handler.calls) == 3)
    agent.stop()
    handler.gates[2].set()
    await asyncio.wait_for(task, 10)  # stop lets the batches in hand finish
    assert handler.calls == [["e0", "e1"], ["e2", "e3"], ["e4", "e5"]]
    assert agent.stats.acked == 6 and (await group())["pending"] == 0


async def test_a_batching_handler_reads_its_own_number_of_entries(
    client: aioredis.Redis, prefix: str, make_config: Callable[..., Any]
) -> None:
    config = make_config("", prefix, "[bus]\nbatch = 2\nclaim_idle = 60\nblock = 0.05")
    bus = Bus(client, Keys(prefix), config.bus)
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(7)])
    calls: list[int] = []

    class Batching:
        batch_entries = 3

        async def __call__(self, entries: Sequence[Entry]) -> None:
            calls.append(len(entries))

    agent = Agent("g", Batching(), bus, stream=K.EVENTS, backoff=FAST)
    await run_until(agent, lambda: agent.stats.acked == 7)
    assert calls == [3, 3, 1]  # not bus.batch's 2


async def test_with_batches_in_hand_a_poison_entry_is_still_found_alone(bus: Bus) -> None:
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(10)])
    done: list[str] = []

    class Overlapping:
        batches_in_flight = 2

        async def __call__(self, entries: Sequence[Entry]) -> None:
            if any(e.events[0].event_id == "e4" for e in entries):
                raise ValueError("cannot handle e4")
            done.extend(e.events[0].event_id for e in entries)

    agent = Agent("g", Overlapping(), bus, stream=K.EVENTS, backoff=FAST)
    await run_until(agent, lambda: agent.stats.dead_lettered == 1 and agent.stats.acked >= 9)
    assert sorted(done) == sorted(f"e{i}" for i in range(10) if i != 4)  # each once
    assert (await bus.stats())["streams"][K.EVENTS]["groups"]["g"]["pending"] == 0


async def test_the_backoff_grows_while_batches_keep_failing_and_starts_over_after_one_passes(
    bus: Bus,
) -> None:
    await bus.publish(K.EVENTS, [event(1)])
    attempts: list[int] = []

    class Counting(Backoff):
        def delay(self, attempt: int) -> float:
            attempts.append(attempt)
            return 0.0

    failures = iter([True] * 4 + [False])

    async def flaky(entries: Sequence[Entry]) -> None:
        if next(failures, False):
            raise BusUnavailable("warehouse away")

    agent = Agent("g", flaky, bus, stream=K.EVENTS, backoff=Counting())
    task = asyncio.create_task(agent.run())
    await eventually(lambda: agent.stats.acked == 1)
    failures = iter([True, False])
    await bus.publish(K.EVENTS, [event(2)])
    await eventually(lambda: agent.stats.acked == 2)
    agent.stop()
    await asyncio.wait_for(task, 10)
    assert attempts == [1, 2, 3, 4, 1]
    assert Backoff(base=0.05, cap=5.0).delay(5000) <= 5.0  # no float overflow after hours


async def test_entries_a_failed_read_delivered_are_read_again_at_once(
    client: aioredis.Redis, prefix: str, make_config: Callable[..., Any], monkeypatch: Any
) -> None:
    """A read can fail after Redis delivered its entries (a large reply slower than the socket
    timeout): they wait in the consumer's pending entries, and the next read takes them there
    instead of leaving them to a reclaim ``claim_idle`` later (an hour here)."""
    config = make_config("", prefix, "[bus]\nclaim_idle = 3600.0\nblock = 0.05")
    bus = Bus(client, Keys(prefix), config.bus)
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(5)])
    seen: list[str] = []

    async def handler(entries: Sequence[Entry]) -> None:
        seen.extend(e.events[0].event_id for e in entries)

    read, lost = bus.read, []

    async def reply_lost(*args: Any, **kwargs: Any) -> list[Entry]:
        entries = await read(*args, **kwargs)
        if entries and not lost:
            lost.append(len(entries))
            raise BusUnavailable("read events: Timeout reading from socket")
        return entries

    monkeypatch.setattr(bus, "read", reply_lost)
    agent = Agent("g", handler, bus, stream=K.EVENTS, backoff=FAST)
    await run_until(agent, lambda: len(seen) == 5)
    assert lost == [5]
    assert sorted(seen) == sorted(f"e{i}" for i in range(5))
    assert agent.stats.reclaimed == 0
    assert (await bus.stats())["streams"][K.EVENTS]["groups"]["g"]["pending"] == 0
