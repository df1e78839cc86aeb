"""filter: duplicates and malformed events dropped, bots passed on flagged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from gateway import keys as K
from gateway.agents.filter import Filter
from gateway.bus import Entry
from tests.gateway.agents.chain import DAY, Chain, by_id, ev


async def test_duplicates_are_dropped_within_a_batch_across_entries_and_later(
    chain: Chain,
) -> None:
    await chain.publish([ev("e1", 0), ev("e1", 0)], [ev("e2", 1), ev("e1", 0)])
    await chain.run("filter")
    await chain.publish([ev("e2", 1), ev("e3", 2)])  # a client retrying, later
    await chain.run("filter")
    passed = await chain.events(K.FILTERED)
    assert [e.event_id for e in passed] == ["e1", "e2", "e3"]
    assert chain.handler("filter").stats.duplicates == 3


async def test_the_same_id_on_another_site_is_not_a_duplicate(
    make_chain: Callable[..., Chain],
) -> None:
    chain = make_chain('[sites.shop]\nwrite_key = "shop-write-key"')
    await chain.publish([ev("e1", 0), ev("e1", 0, site="shop")])
    await chain.run("filter")
    assert [(e.site, e.event_id) for e in await chain.events(K.FILTERED)] == [
        ("demo", "e1"),
        ("shop", "e1"),
    ]


async def test_malformed_events_are_dropped(chain: Chain) -> None:
    await chain.publish(
        [
            ev("ok", 0),
            ev("site", 0, site="nowhere"),
            ev("name", 0, type="track"),
            ev("alias", 0, type="alias", user_id="u1"),
            ev("old", 0, timestamp=DAY.replace(year=1999)),
            ev("ahead", 0, timestamp=DAY + timedelta(days=2)),
            ev(" ", 0),
        ]
    )
    await chain.run("filter")
    assert [e.event_id for e in await chain.events(K.FILTERED)] == ["ok"]
    assert chain.handler("filter").stats.malformed == 6


async def test_bots_pass_flagged(chain: Chain) -> None:
    crawler = {"userAgentData": {"browser": "Googlebot", "bot": True}}
    await chain.publish([ev("b1", 0, context={"bot": True}), ev("b2", 0, context=crawler)])
    await chain.run("filter")
    passed = by_id(await chain.events(K.FILTERED))
    assert passed["b1"].context["bot"] is True and passed["b2"].context["bot"] is True
    assert chain.handler("filter").stats.bots == 2


async def test_a_replayed_entry_publishes_nothing_twice(chain: Chain) -> None:
    await chain.publish([ev("e1", 0), ev("e2", 1)])
    await chain.run("filter")
    await chain.replay("filter")
    await chain.run("filter")
    assert [e.event_id for e in await chain.events(K.FILTERED)] == ["e1", "e2"]


async def test_ids_in_hand_are_seen_by_a_later_screen_until_marked_or_released(
    chain: Chain,
) -> None:
    """The collector screens a batch while the one before is still in hand: a copy in the
    second is a duplicate; a batch that failed is released, so its retry passes whole."""
    screen = Filter(chain.bus, chain.config)
    first = [Entry("1-0", [ev("e1", 0), ev("e2", 1)])]
    second = [Entry("1-1", [ev("e2", 1), ev("e3", 2)])]
    held = await screen.screen(first)
    later = await screen.screen(second)  # before the first is marked
    assert [e.event_id for e in later.events[0]] == ["e3"]
    screen.release(held)  # the first batch failed: nothing marked
    retried = await screen.screen(first)
    assert [e.event_id for e in retried.events[0]] == ["e1", "e2"]
    await screen.mark(retried)
    screen.release(retried)
    screen.release(later)
    again = await screen.screen(first + second)  # marked in Redis now, nothing in hand
    assert [e.event_id for events in again.events for e in events] == ["e3"]
    assert screen.stats.duplicates == 1 + 3


async def test_a_screen_started_while_another_waits_on_redis_sees_its_ids(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector starts screening the next batch while the one before still waits for its
    reply from Redis: the copy in the next batch is a duplicate all the same."""
    screen = Filter(chain.bus, chain.config)
    seen, waiting, gate = screen._seen, asyncio.Event(), asyncio.Event()
    overtaking: list[list[str]] = []

    async def first_waits(by_site: dict[str, list[str]], bucket: int) -> dict[str, set[str]]:
        if not waiting.is_set() and "e3" in by_site["demo"]:
            overtaking.append(by_site["demo"])  # the second asks Redis before the first
        found = await seen(by_site, bucket)
        if "e1" in by_site["demo"]:
            waiting.set()
            await gate.wait()  # the first batch's reply is late
        return found

    monkeypatch.setattr(screen, "_seen", first_waits)
    first = asyncio.create_task(screen.screen([Entry("1-0", [ev("e1", 0), ev("e2", 1)])]))
    second = asyncio.create_task(screen.screen([Entry("1-1", [ev("e2", 1), ev("e3", 2)])]))
    # The second task's first step ran right after the first's, before the first's reply came:
    # by now it waits its turn, or it asked Redis itself (overtaking) and may be done.
    await waiting.wait()
    assert not overtaking
    assert not second.done()
    gate.set()
    held, later = await first, await second
    assert [e.event_id for e in held.events[0]] == ["e1", "e2"]
    assert [e.event_id for e in later.events[0]] == ["e3"]
    assert screen.stats.duplicates == 1


async def test_a_batch_marked_and_released_while_a_screen_waits_on_redis_is_still_seen(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch in hand finishes (marked in Redis, released) between the next screen's look-up
    in Redis and its reply: its ids are in neither what Redis answered nor what is in hand by
    then, so the screen takes what was in hand before it asked."""
    screen = Filter(chain.bus, chain.config)
    held = await screen.screen([Entry("1-0", [ev("e1", 0), ev("e2", 1)])])
    seen, asked, gate = screen._seen, asyncio.Event(), asyncio.Event()

    async def reply_late(by_site: dict[str, list[str]], bucket: int) -> dict[str, set[str]]:
        found = await seen(by_site, bucket)  # Redis answered: e2 not marked yet
        asked.set()
        await gate.wait()
        return found

    monkeypatch.setattr(screen, "_seen", reply_late)
    second = asyncio.create_task(screen.screen([Entry("1-1", [ev("e2", 1), ev("e3", 2)])]))
    await asked.wait()
    await screen.mark(held)  # the first batch is through meanwhile
    screen.release(held)
    gate.set()
    later = await second
    assert [e.event_id for e in later.events[0]] == ["e3"]
    assert screen.stats.duplicates == 1
