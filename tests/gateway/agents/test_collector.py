"""collector: the chain in one pass per batch — nothing is marked seen until the batch is
through, so its retry counts each event once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import keys as K
from gateway import pacing
from gateway.agents import AGENTS, AgentContext
from gateway.agents.collector import Collector
from gateway.agents.runtime import Agent
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.datamart import profiles
from gateway.events import Event, pack
from gateway.keys import Keys
from gateway.warehouse import Warehouse, open_warehouse
from tests.gateway.agents.chain import COLLECTOR, FAST, Chain, ev
from tests.helpers import eventually


@pytest.fixture
async def warehouse(chain: Chain) -> AsyncIterator[Warehouse]:
    opened = await open_warehouse(chain.config)  # DuckDB under the test's data dir
    await opened.migrate()
    yield opened
    await opened.close()


async def test_a_failing_batch_writes_nothing_and_its_retry_counts_once(
    chain: Chain, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = AgentContext(chain.config, chain.client, chain.keys, chain.bus, warehouse)
    handler: Collector = AGENTS["collector"].make(ctx)  # type: ignore[assignment]
    visits = [[ev(f"e{n}", n) for n in range(i, i + 3)] for i in (0, 3, 6)]
    entries = [Entry(f"1-{i}", events, raw=pack(events)) for i, events in enumerate(visits)]
    resolve, calls = handler.identity.resolve, []

    async def failing_once(batches: list[list[Event]]) -> Any:
        calls.append([e.event_id for events in batches for e in events])
        if len(calls) == 1:
            raise RuntimeError("identity: boom")
        return await resolve(batches)

    monkeypatch.setattr(handler.identity, "resolve", failing_once)
    with pytest.raises(RuntimeError, match="boom"):
        await handler(entries)
    assert calls == [[f"e{n}" for n in range(9)]]
    assert await fact_events(warehouse) == 0

    await handler(entries)  # the runtime's retry of the batch
    assert handler.filter.stats.duplicates == 0  # nothing was marked seen by the failed try
    assert await fact_events(warehouse) == 9
    customer = await profiles.find_customer(chain.client, chain.keys, "demo", "anonymous_id", "a1")
    assert customer
    profile = await profiles.get_profile(chain.client, chain.keys, customer)
    assert profile and (profile.counters.events, profile.counters.visits) == (9, 1)

    await handler(entries)  # delivered again after it went through: all duplicates now
    assert handler.filter.stats.duplicates == 9
    assert await fact_events(warehouse) == 9


async def test_batches_in_hand_meet_sessions_and_identity_in_reading_order(
    chain: Chain, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = AgentContext(chain.config, chain.client, chain.keys, chain.bus, warehouse)
    handler: Collector = AGENTS["collector"].make(ctx)  # type: ignore[assignment]
    steps: list[str] = []

    def traced(step: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def call(batches: list[list[Event]], *args: Any) -> Any:
            first = batches[0][0].event_id
            steps.append(f"{step} {first}")
            try:
                return await inner(batches, *args)
            finally:
                steps.append(f"{step} {first} done")

        return call

    monkeypatch.setattr(handler.sessions, "assign", traced("sessions", handler.sessions.assign))
    monkeypatch.setattr(handler.identity, "resolve", traced("identity", handler.identity.resolve))
    first, second = [ev(f"a{n}", n) for n in range(3)], [ev(f"b{n}", 3 + n) for n in range(3)]
    await asyncio.gather(
        handler([Entry("1-0", first, raw=pack(first))]),
        handler([Entry("1-1", second, raw=pack(second))]),
    )
    assert [s for s in steps if s.startswith("sessions")] == [
        "sessions a0", "sessions a0 done", "sessions b0", "sessions b0 done",
    ]  # fmt: skip
    assert [s for s in steps if s.startswith("identity")] == [
        "identity a0", "identity a0 done", "identity b0", "identity b0 done",
    ]  # fmt: skip
    assert await fact_events(warehouse) == 6


async def fact_events(warehouse: Warehouse) -> int:
    return int((await warehouse.fetch("SELECT count(*) AS n FROM fact_event"))[0]["n"])


async def test_two_members_share_the_group_and_count_each_event_once(
    make_config: Callable[..., Config], redis_client: aioredis.Redis, prefix: str
) -> None:
    """Two collector members (two processes, or two machines with PostgreSQL) take batches of
    one group at the same time; a client's retry lands in another batch than the original."""
    config = make_config("", prefix, "[bus]\nblock = 0.02", COLLECTOR + "\nbatch = 3")
    chain = Chain(config, redis_client, Bus(redis_client, Keys(prefix), config.bus))
    visitors, each = 12, 15
    events = [
        ev(f"v{v}-{n}", n, anonymous_id=f"v{v}") for n in range(each) for v in range(visitors)
    ]
    entries = [events[i : i + 9] for i in range(0, len(events), 9)]
    retries = [entries[i][:2] for i in range(0, len(entries), 4)]  # sent again, later
    await chain.publish(*entries[:10], *retries[:2], *entries[10:], *retries[2:])
    warehouse = await open_warehouse(config)
    await warehouse.migrate()
    ctx = AgentContext(config, redis_client, chain.keys, chain.bus, warehouse)
    members = [
        Agent("collector", AGENTS["collector"].make(ctx), chain.bus, stream=K.EVENTS, backoff=FAST)
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(member.run()) for member in members]
    try:
        await eventually(lambda: chain.drained(K.EVENTS, "collector"), within=30)
        assert all(member.stats.entries > 0 for member in members)  # both took batches
        (row,) = await warehouse.fetch(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM fact_event"
        )
        assert (row["n"], row["d"]) == (len(events), len(events))
        for v in range(visitors):
            customer = await profiles.find_customer(
                redis_client, chain.keys, "demo", "anonymous_id", f"v{v}"
            )
            assert customer
            profile = await profiles.get_profile(redis_client, chain.keys, customer)
            assert profile is not None
            counters = profile.counters
            assert (counters.events, counters.page_views, counters.visits) == (each, each, 1)
    finally:
        for member in members:
            member.stop()
        await asyncio.gather(*tasks)
        await warehouse.close()


async def test_every_step_hands_the_event_loop_back_while_it_works_through_a_batch(
    chain: Chain, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is seconds of Python at full size: each step's per-event loop lets the loop run
    others (the HTTP server of ``serve``) between slices. With a slice of 0 s every look at
    the clock yields; the steps whose paces yielded are noted (by name: the steps may be
    compiled, with no frames to look at)."""
    monkeypatch.setattr(pacing, "SLICE", 0.0)
    yielded: set[str] = set()
    call = pacing.Pace.__call__

    async def noting(pace: pacing.Pace) -> None:
        yielded.add(pace.step)
        await call(pace)

    monkeypatch.setattr(pacing.Pace, "__call__", noting)
    ctx = AgentContext(chain.config, chain.client, chain.keys, chain.bus, warehouse)
    handler: Collector = AGENTS["collector"].make(ctx)  # type: ignore[assignment]
    visits = [[ev(f"e{i}-{n}", n, anonymous_id=f"a{i}") for n in range(300)] for i in range(4)]
    await handler([Entry(f"1-{i}", events, raw=pack(events)) for i, events in enumerate(visits)])
    monkeypatch.setattr(pacing.Pace, "__call__", call)
    assert {
        "filter.screen", "sessions.assign", "sessions.load", "sessions.commit",
        "identity.resolve", "identity.settle", "profile", "facts",
    } <= yielded  # fmt: skip
    assert await fact_events(warehouse) == 1200
