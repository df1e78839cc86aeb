"""The ingest write path on a real Redis: group commit and messageId de-duplication."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from gateway import keys as K
from gateway.bus import Bus
from gateway.errors import BusUnavailable, EventError
from gateway.publisher import Published, Publisher
from gateway.redis import connect
from tests.helpers import event

STREAM = K.EVENTS


@pytest.fixture
async def publisher(bus: Bus) -> AsyncIterator[Publisher]:
    await bus.ensure_group(STREAM, "g")
    p = Publisher(bus, timeout=5.0)
    p.start()
    yield p
    await p.close()


async def stored(bus: Bus) -> list[str]:
    ids: list[str] = []
    while entries := await bus.read(STREAM, "g", "c", count=500, block=0.01):
        ids.extend(e.event_id for entry in entries for e in entry.events)
    return ids


async def test_concurrent_publishes_share_a_pipeline_one_entry_each(
    bus: Bus, publisher: Publisher
) -> None:
    results = await asyncio.gather(*(publisher.publish(STREAM, [event(i)]) for i in range(300)))
    assert len({r.entry_id for r in results}) == 300
    assert publisher.published_events == 300
    assert sorted(await stored(bus)) == sorted(f"e{i}" for i in range(300))


async def test_dedup_drops_ids_seen_before_and_within_one_flush(
    bus: Bus, publisher: Publisher
) -> None:
    first = await publisher.publish(STREAM, [event(1), event(2)], dedup=60)
    assert (first.events, first.duplicates) == (2, 0)
    again, other_site, twice = await asyncio.gather(
        publisher.publish(STREAM, [event(1), event(3)], dedup=60),
        publisher.publish(STREAM, [event(1, site="shop")], dedup=60),  # another site's id
        publisher.publish(STREAM, [event(3)], dedup=60),  # same flush as the e3 above
    )
    assert (again.events, again.duplicates) == (1, 1)
    assert (other_site.events, other_site.duplicates) == (1, 0)
    assert (twice.events, twice.duplicates, twice.entry_id) == (0, 1, None)
    without = await publisher.publish(STREAM, [event(1)])  # dedup off: published as sent
    assert without.events == 1
    assert sorted(await stored(bus)) == ["e1", "e1", "e1", "e2", "e3"]


async def test_a_failed_write_marks_nothing_so_the_retry_is_stored(bus: Bus) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    broken = Bus(connect(f"redis://127.0.0.1:{dead_port}/0", timeout=0.5), bus.keys, bus.settings)
    failing = Publisher(broken, timeout=2.0)
    failing.start()
    with pytest.raises(BusUnavailable):
        await failing.publish(STREAM, [event(7)], dedup=60)
    await failing.close()
    await broken.client.aclose()

    await bus.ensure_group(STREAM, "g")
    working = Publisher(bus, timeout=5.0)
    working.start()
    retry = await working.publish(STREAM, [event(7)], dedup=60)
    await working.close()
    assert (retry.events, retry.duplicates) == (1, 0)
    assert await stored(bus) == ["e7"]


async def test_events_the_bus_cannot_carry_fail_their_own_publish_only(
    bus: Bus, publisher: Publisher
) -> None:
    """Parsing refuses such events; one that got past it (a channel's bug) must not fail the
    requests flushed with it, nor stop the publisher."""
    bad = event(1, properties={"n": 2**64})
    refused, good = await asyncio.gather(
        publisher.publish(STREAM, [bad, event(2)], dedup=60),
        publisher.publish(STREAM, [event(3)], dedup=60),
        return_exceptions=True,
    )
    assert isinstance(refused, EventError)
    assert "cannot be carried on the bus" in refused.reason
    assert isinstance(good, Published) and good.events == 1
    # nothing of the refused request was written or marked seen: its fixed retry is stored
    retry = await publisher.publish(STREAM, [event(1), event(2)], dedup=60)
    assert (retry.events, retry.duplicates) == (2, 0)
    assert sorted(await stored(bus)) == ["e1", "e2", "e3"]
    assert publisher.published_events == 3


async def test_a_failing_flush_fails_its_batch_and_the_publisher_goes_on(
    bus: Bus, publisher: Publisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(batch: list[object]) -> list[int]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(publisher, "_drop_seen", broken)
    with pytest.raises(BusUnavailable, match="a bug"):
        await publisher.publish(STREAM, [event(1)], dedup=60)
    monkeypatch.undo()
    assert (await publisher.publish(STREAM, [event(2)], dedup=60)).events == 1
    assert await stored(bus) == ["e2"]
