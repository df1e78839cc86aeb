"""The bus on a real Redis: the service one and an embedded one (each test runs on both)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from gateway import bus as bus_module
from gateway import keys as K
from gateway.bus import Bus
from gateway.config import BusConfig
from gateway.errors import BusUnavailable
from gateway.redis import connect
from tests.helpers import event, eventually

STREAM = K.EVENTS


async def test_publish_consume_ack_round_trip(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "g")
    sent = [event(1), event(2, channel="pos")]
    entry_id = await bus.publish(STREAM, sent)
    (entry,) = await bus.read(STREAM, "g", "c1", count=10, block=1)
    assert entry.id == entry_id
    assert entry.events == sent
    assert entry.deliveries == 1
    stats = (await bus.stats())["streams"][STREAM]
    assert stats["length"] == 1
    assert stats["groups"]["g"]["pending"] == 1
    await bus.ack(STREAM, "g", [entry.id])
    stats = (await bus.stats())["streams"][STREAM]
    assert stats["groups"]["g"] == {
        "pending": 0,
        "lag": 0,
        "consumers": 1,
        "last_delivered_id": entry_id,
    }
    assert await bus.read(STREAM, "g", "c1", count=10, block=0.01) == []


async def test_publish_many_keeps_order_within_the_stream(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "g")
    batches = [[event(i)] for i in range(250)]
    ids = await bus.publish_many(STREAM, batches)
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    got: list[str] = []
    while entries := await bus.read(STREAM, "g", "c", count=100, block=0.01):
        got.extend(e.events[0].event_id for e in entries)
    assert got == [f"e{i}" for i in range(250)]


async def test_own_pending_entries_are_read_again_in_parts(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "READ_PART", 100)
    await bus.ensure_group(STREAM, "g")
    await bus.publish_many(STREAM, [[event(i)] for i in range(250)])
    delivered = await bus.read(STREAM, "g", "c", count=800, block=0.01)
    assert [e.events[0].event_id for e in delivered] == [f"e{i}" for i in range(250)]
    # ... the reply was lost: the consumer reads what it holds, each entry once, in order
    again = await bus.read(STREAM, "g", "c", count=800, block=0.01, own=True)
    assert [e.id for e in again] == [e.id for e in delivered]
    assert all(e.deliveries == 1 for e in delivered)
    assert await bus.read(STREAM, "g", "c", count=800, block=0.01) == []


async def test_a_large_batch_is_read_within_the_timeout_while_the_loop_is_busy(
    redis_client: aioredis.Redis,
    service_redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One reply must arrive whole within ``redis.timeout``, read ~100 KB per turn of a loop
    that other work holds (batches in hand, 10 ms a turn here): 8 MB cannot. The batch is
    read in parts, each within the timeout."""
    publisher = Bus(redis_client, K.Keys(prefix), BusConfig())
    await publisher.ensure_group(STREAM, "g")
    blob = "x" * 80_000
    await publisher.publish_many(
        STREAM, [[event(i, properties={"blob": blob})] for i in range(100)]
    )
    client = connect(service_redis_url, timeout=0.25)
    reader = Bus(client, K.Keys(prefix), BusConfig())
    stop = asyncio.Event()

    async def busy() -> None:
        while not stop.is_set():
            time.sleep(0.01)  # noqa: ASYNC251 - holds the loop, as a paced step does
            await asyncio.sleep(0)

    hog = asyncio.create_task(busy())
    try:
        monkeypatch.setattr(bus_module, "READ_PART", 1000)  # all in one reply: too long
        with pytest.raises(BusUnavailable, match="read events"):
            await reader.read(STREAM, "g", "c", count=100, block=0.01)
        monkeypatch.setattr(bus_module, "READ_PART", 3)  # 240 KB a part
        entries = await reader.read(STREAM, "g", "c", count=100, block=0.01, own=True)
        assert [e.events[0].event_id for e in entries] == [f"e{i}" for i in range(100)]
    finally:
        stop.set()
        await hog
        await client.aclose()


async def test_lag_counts_undelivered_entries(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "g")
    await bus.publish_many(STREAM, [[event(i)] for i in range(7)])
    await bus.read(STREAM, "g", "c", count=3, block=0.01)
    group = (await bus.stats())["streams"][STREAM]["groups"]["g"]
    assert (group["pending"], group["lag"]) == (3, 4)


async def test_stale_entries_are_reclaimed_by_another_member(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "g")
    await bus.publish_many(STREAM, [[event(i)] for i in range(5)])
    taken = await bus.read(STREAM, "g", "crashed", count=5, block=0.01)
    assert len(taken) == 5  # ... and "crashed" never acks
    claimed = await bus.claim_stale(STREAM, "g", "survivor", min_idle=0.0, count=100)
    assert [e.id for e in claimed.retry] == [e.id for e in taken]
    assert all(e.deliveries == 2 for e in claimed.retry)
    assert claimed.dead == []
    await bus.ack(STREAM, "g", [e.id for e in claimed.retry])
    assert (await bus.stats())["streams"][STREAM]["groups"]["g"]["pending"] == 0


async def test_entries_move_to_dead_letter_after_max_deliveries(
    bus: Bus, client: aioredis.Redis
) -> None:
    await bus.ensure_group(STREAM, "g")
    entry_id = await bus.publish(STREAM, [event(1)])
    await bus.read(STREAM, "g", "c", count=1, block=0.01)  # delivery 1
    for delivery in (2, 3):
        claimed = await bus.claim_stale(STREAM, "g", "c", min_idle=0.0, count=10)
        assert [e.deliveries for e in claimed.retry] == [delivery]
    claimed = await bus.claim_stale(STREAM, "g", "c", min_idle=0.0, count=10)
    assert claimed.retry == [] and [e.deliveries for e in claimed.dead] == [4]
    await bus.dead_letter(STREAM, "g", claimed.dead, "boom")
    ((_, fields),) = await client.xrange(bus.keys.dead_letter(STREAM))
    assert fields[b"id"].decode() == entry_id
    assert fields[b"reason"] == b"boom"
    assert fields[b"group"] == b"g"
    stats = (await bus.stats())["streams"][STREAM]
    assert stats["groups"]["g"]["pending"] == 0
    assert stats["dead_letter"] == 1


async def test_trim_never_removes_what_a_group_has_not_acked(
    bus: Bus, client: aioredis.Redis
) -> None:
    key = bus.keys.stream(STREAM)
    old_ms = int((time.time() - 10 * 86_400) * 1000)  # ten days old: past any retention
    for i in range(10):
        await client.xadd(key, {K.ENTRY_FIELD: b"\x90"}, id=f"{old_ms + i}-0")
    await bus.ensure_group(STREAM, "fast")
    await bus.ensure_group(STREAM, "slow")
    fast = await bus.read(STREAM, "fast", "c", count=10, block=0.01)
    await bus.ack(STREAM, "fast", [e.id for e in fast])
    slow = await bus.read(STREAM, "slow", "c", count=6, block=0.01)
    await bus.ack(STREAM, "slow", [e.id for e in slow[:2]] + [slow[4].id])  # 2 and 3 pending
    assert await bus.trim(STREAM) == 2  # only the first two: the third is pending for "slow"
    remaining = [e[0].decode() for e in await client.xrange(key)]
    assert remaining == [f"{old_ms + i}-0" for i in range(2, 10)]
    await bus.ack(STREAM, "slow", [slow[2].id, slow[3].id, slow[5].id])
    assert await bus.trim(STREAM) == 4  # up to what "slow" has not been delivered yet
    rest = await bus.read(STREAM, "slow", "c", count=10, block=0.01)
    assert [e.id for e in rest] == [f"{old_ms + i}-0" for i in range(6, 10)]


async def test_trim_keeps_entries_within_retention(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "g")
    await bus.publish_many(STREAM, [[event(i)] for i in range(3)])
    entries = await bus.read(STREAM, "g", "c", count=10, block=0.01)
    await bus.ack(STREAM, "g", [e.id for e in entries])
    assert await bus.trim(STREAM) == 0  # acked, but younger than bus.retention


async def test_a_local_reader_gets_shared_events_without_decoding(bus: Bus) -> None:
    """``share``: the events a process publishes go to its own readers as they are, and to
    everyone else through Redis; what is kept is dropped once every local reader took it."""
    await bus.ensure_group(STREAM, "local")
    await bus.ensure_group(STREAM, "other")
    await bus.read(STREAM, "local", "c", count=1, block=0.01)  # "local" reads here
    sent = [event(1), event(2)]
    (entry_id,) = await bus.publish_many(STREAM, [sent], share=True)
    (entry,) = await bus.read(STREAM, "local", "c", count=1, block=1)
    assert entry.id == entry_id and entry.events == sent
    assert all(a is b for a, b in zip(entry.events, sent, strict=True))  # not decoded
    elsewhere = Bus(bus.client, bus.keys, bus.settings)  # another process, so to speak
    (copy,) = await elsewhere.read(STREAM, "other", "c", count=1, block=1)
    assert copy.events == sent and copy.events[0] is not sent[0]
    assert bus._shared_events[STREAM] == 0  # the only local reader took it
    await bus.ack(STREAM, "local", [entry.id])
    await bus.client.xgroup_setid(bus.keys.stream(STREAM), "local", "0")  # a replay...
    (again,) = await bus.read(STREAM, "local", "c", count=1, block=1)
    assert again.events == sent and again.events[0] is not sent[0]  # ...reads from Redis


async def test_shared_events_are_used_only_for_the_bytes_published(bus: Bus) -> None:
    await bus.ensure_group(STREAM, "local")
    await bus.read(STREAM, "local", "c", count=1, block=0.01)
    sent = [event(1)]
    (entry_id,) = await bus.publish_many(STREAM, [sent], share=True)
    assert bus._take_shared(STREAM, "local", entry_id, b"other bytes") is None
    assert bus._take_shared(STREAM, "nobody", entry_id, bus._shared[STREAM][entry_id].raw) is None


async def test_a_producer_waits_for_its_local_readers(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SHARE_CAP events kept for local readers, a producer waits until they take some;
    readers that take nothing for SHARE_WAIT s lose what is kept (they decode instead)."""
    monkeypatch.setattr(bus_module, "SHARE_CAP", 3)
    monkeypatch.setattr(bus_module, "SHARE_WAIT", 0.2)
    await bus.ensure_group(STREAM, "local")
    await bus.read(STREAM, "local", "c", count=1, block=0.01)
    await bus.publish_many(STREAM, [[event(1), event(2)]], share=True)
    second = asyncio.create_task(bus.publish_many(STREAM, [[event(3), event(4)]], share=True))
    await eventually(lambda: STREAM in bus._freed)  # the producer waits for room
    assert not second.done()  # 2 kept + 2 more > 3
    (first,) = await bus.read(STREAM, "local", "c", count=1, block=1)
    await asyncio.wait_for(second, 1)
    assert [e.event_id for e in first.events] == ["e1", "e2"]
    began = time.monotonic()
    await bus.publish_many(STREAM, [[event(5), event(6)]], share=True)  # nobody takes e3, e4
    assert time.monotonic() - began >= 0.2
    assert bus._shared_events[STREAM] == 2  # e3, e4 forgotten, e5, e6 kept
    rest = await bus.read(STREAM, "local", "c", count=10, block=1)
    assert [e.event_id for entry in rest for e in entry.events] == ["e3", "e4", "e5", "e6"]
    bus.leave(STREAM, "local")
    assert bus._shared_events[STREAM] == 0


async def test_execute_reads_every_reply_then_raises_an_error_reply(bus: Bus) -> None:
    key = bus.keys.stream("scratch")
    commands = [(b"SET", key, b"1"), (b"LPUSH", key, b"x"), (b"GET", key)]
    with pytest.raises(BusUnavailable, match="WRONGTYPE"):
        await bus.execute(commands)
    assert await bus.execute([(b"GET", key), (b"DEL", key)]) == [b"1", 1]  # still in step


#: Busy for ARGV[1] ms of the server's clock (a command that takes long in Redis).
SLOW = """
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return 1
"""


async def test_execute_writes_a_long_pipeline_in_parts_each_within_the_timeout(
    service_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline that runs longer in Redis than the client's timeout (a large batch's) is not
    a timeout: each part's replies are read before the next part is written."""
    monkeypatch.setattr(bus_module, "PART_BYTES", 1)  # one command a part
    client = connect(service_redis_url, timeout=0.25)
    try:
        slow = [(b"EVAL", SLOW, 0, 50)] * 8  # 400 ms in all, 50 ms a part
        assert await bus_module.execute(client, slow) == [1] * 8
        monkeypatch.setattr(bus_module, "PART_BYTES", 1 << 20)  # all in one part: too long
        with pytest.raises(BusUnavailable, match=r"no reply within 0\.25 s"):
            await bus_module.execute(client, slow)
    finally:
        await client.aclose()


async def test_execute_parts_keep_the_order_and_stop_at_an_error(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "PART_BYTES", 60)  # a few commands a part
    key, other = bus.keys.stream("scratch"), bus.keys.stream("other")
    assert await bus.execute([(b"INCR", key)] * 25) == list(range(1, 26))
    monkeypatch.setattr(bus_module, "PART_BYTES", 1)  # one command a part
    third = bus.keys.stream("third")
    with pytest.raises(BusUnavailable, match="WRONGTYPE"):
        await bus.execute([(b"LPUSH", key, b"x"), (b"SET", other, b"1"), (b"SET", third, b"1")])
    # the part after the failed one had gone out before its reply came; none after that
    assert await bus.execute([(b"EXISTS", other), (b"EXISTS", third), (b"DEL", key, other)]) == [
        1,
        0,
        2,
    ]


async def test_execute_makes_the_commands_of_a_generator_as_redis_runs_the_parts_before(
    service_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part goes out before the replies of the one before are read, and a generator's
    commands are taken only as parts are packed: command n is made once command n - 2 has
    run (made up front, none would have run)."""
    monkeypatch.setattr(bus_module, "PART_BYTES", 1)  # one command a part
    client = connect(service_redis_url, timeout=5.0)
    probe = redis.Redis.from_url(service_redis_url)  # a second connection, looking on
    key = f"test-execute-{secrets.token_hex(4)}"
    ran: list[int] = []  # per command made: how many had run by then

    def commands() -> Iterator[tuple[Any, ...]]:
        for _ in range(6):
            ran.append(int(probe.get(key) or 0))
            yield (b"INCR", key)

    try:
        assert await bus_module.execute(client, commands()) == [1, 2, 3, 4, 5, 6]
        assert len(ran) == 6
        assert all(ran[n] >= n - 1 for n in range(2, 6)), ran
    finally:
        probe.delete(key)
        probe.close()
        await client.aclose()
