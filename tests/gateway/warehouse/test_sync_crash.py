"""Crash safety of the converter: 100,000 events, the sync agent SIGKILLed three times mid-way
and restarted; the warehouse ends with exactly 100,000 events and the profiles with the right
counters (on DuckDB and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.agents.runtime import Agent, Backoff
from gateway.bus import Bus
from gateway.config import Config
from gateway.datamart import profiles
from gateway.events import Event
from gateway.keys import Keys
from gateway.redis import connect
from gateway.warehouse import open_warehouse
from tests.conftest import ROOT
from tests.helpers import eventually

EVENTS = 100_000
VISITORS = 500
PER_ENTRY = 100
CHAIN = ("filter", "sessions", "identity", "profile")
FAST = Backoff(base=0.001, cap=0.05)


def generate(start: datetime) -> list[Event]:
    """Page views of VISITORS visitors, one second apart per visitor (one long visit each)."""
    return [
        Event(
            event_id=f"crash-{i}",
            type="page",
            channel="web",
            site="demo",
            timestamp=start + timedelta(seconds=i // VISITORS),
            received_at=start + timedelta(seconds=i // VISITORS),
            anonymous_id=f"v{i % VISITORS}",
            context={"page": {"path": f"/p/{i % 37}"}},
        )
        for i in range(EVENTS)
    ]


ENTRIES = EVENTS // PER_ENTRY


async def synced(bus: Bus) -> int:
    """Entries of the identified stream the sync group has acknowledged."""
    stream = (await bus.stats())["streams"][K.IDENTIFIED]
    group = stream["groups"]["sync"]
    return int(stream["length"]) - int(group["lag"]) - int(group["pending"])


async def start_sync(config: Config) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "agent", "sync", "--config", config.source,
        cwd=ROOT, stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.mark.slow
async def test_sync_sigkilled_three_times_loads_every_event_exactly_once(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str, warehouse_section: str
) -> None:
    config = make_config(
        service_redis_url,
        prefix,
        warehouse_section,
        "[bus]\nblock = 0.05\nclaim_idle = 1.0\nbatch = 50",
        "[collector]\nsession_timeout = 86400.0",
    )
    client: aioredis.Redis = connect(service_redis_url, timeout=10)
    bus = Bus(client, Keys(prefix), config.bus)
    await bus.ensure_group(K.IDENTIFIED, "sync")
    events = generate(datetime.now(UTC) - timedelta(hours=2))
    await bus.publish_many(
        K.EVENTS, [events[i : i + PER_ENTRY] for i in range(0, EVENTS, PER_ENTRY)]
    )
    ctx = AgentContext(config, client, bus.keys, bus)
    chain = [
        Agent(n, AGENTS[n].make(ctx), bus, stream=AGENTS[n].stream, backoff=FAST) for n in CHAIN
    ]
    tasks = [asyncio.create_task(agent.run()) for agent in chain]
    kills = 0
    try:
        for share in (0.25, 0.5, 0.75):  # kill once that share is loaded, mid-batch likely
            sync = await start_sync(config)
            await eventually(lambda s=share: _reached(bus, s * ENTRIES), within=120, every=0.05)
            sync.send_signal(signal.SIGKILL)
            await sync.wait()
            kills += 1
        sync = await start_sync(config)
        await eventually(lambda: _reached(bus, ENTRIES), within=180, every=0.1)
        sync.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(sync.wait(), 30) == 0
    finally:
        for agent in chain:
            agent.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert kills == 3
    warehouse = await open_warehouse(config)
    try:
        (row,) = await warehouse.fetch(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM fact_event "
            "WHERE event_id LIKE 'crash-%'"
        )
    finally:
        await warehouse.close()
    assert (row["n"], row["d"]) == (EVENTS, EVENTS)
    for visitor in ("v0", "v1", f"v{VISITORS - 1}"):
        customer = await profiles.find_customer(client, bus.keys, "demo", "anonymous_id", visitor)
        assert customer
        profile = await profiles.get_profile(client, bus.keys, customer)
        assert profile is not None
        assert profile.counters.page_views == EVENTS // VISITORS
        assert profile.counters.events == EVENTS // VISITORS
    await client.aclose()


async def _reached(bus: Bus, entries: float) -> bool:
    return await synced(bus) >= entries
