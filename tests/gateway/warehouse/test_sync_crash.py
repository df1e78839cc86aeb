"""Crash safety: 100,000 events, an agent process SIGKILLed three times mid-way and restarted —
the converter (``sync``, the chain's other agents running alongside), then the ``collector``
agent (the whole chain in one pass, as ``touchpoint serve`` runs it by default); the warehouse
ends with exactly 100,000 events and the profiles with the right counters (on DuckDB and on
PostgreSQL)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
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


async def acknowledged(bus: Bus, stream: str, group: str) -> int:
    """Entries of ``stream`` that ``group`` has acknowledged."""
    found = (await bus.stats())["streams"][stream]
    figures = found["groups"][group]
    return int(found["length"]) - int(figures["lag"]) - int(figures["pending"])


async def start_agent(config: Config, name: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "agent", name, "--config", config.source,
        cwd=ROOT, stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def kill_three_times(config: Config, bus: Bus, name: str, stream: str) -> None:
    """Run agent ``name`` in its own process, SIGKILL it once a quarter, a half and three
    quarters of the entries are acknowledged (mid-batch likely), then let one finish."""
    for share in (0.25, 0.5, 0.75):
        process = await start_agent(config, name)
        reached = functools.partial(_reached, bus, stream, name, share * ENTRIES)
        await eventually(reached, within=120, every=0.05)
        process.send_signal(signal.SIGKILL)
        await process.wait()
    process = await start_agent(config, name)
    await eventually(lambda: _reached(bus, stream, name, ENTRIES), within=180, every=0.1)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0


async def check_every_event_once(config: Config, client: aioredis.Redis, bus: Bus) -> None:
    """fact_event holds each event once, each visitor's visit is one session (a replay got its
    session again), and the profiles counted each event once."""
    warehouse = await open_warehouse(config)
    try:
        (row,) = await warehouse.fetch(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS d, "
            "count(DISTINCT session_id) AS s FROM fact_event WHERE event_id LIKE 'crash-%'"
        )
    finally:
        await warehouse.close()
    assert (row["n"], row["d"], row["s"]) == (EVENTS, EVENTS, VISITORS)
    for visitor in ("v0", "v1", f"v{VISITORS - 1}"):
        customer = await profiles.find_customer(client, bus.keys, "demo", "anonymous_id", visitor)
        assert customer
        profile = await profiles.get_profile(client, bus.keys, customer)
        assert profile is not None
        assert profile.counters.page_views == EVENTS // VISITORS
        assert profile.counters.events == EVENTS // VISITORS


Crashing = tuple[Config, aioredis.Redis, Bus]


@pytest.fixture
async def crashing(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str, warehouse_section: str
) -> AsyncIterator[Crashing]:
    config = make_config(
        service_redis_url,
        prefix,
        warehouse_section,
        "[bus]\nblock = 0.05\nclaim_idle = 1.0\nbatch = 50",
        "[collector]\nsession_timeout = 86400.0\nbatch = 50",
    )
    client: aioredis.Redis = connect(service_redis_url, timeout=10)
    yield config, client, Bus(client, Keys(prefix), config.bus)
    await client.aclose()


async def publish(bus: Bus, group: str, stream: str) -> None:
    """The events, on the bus, with ``group`` (the one to kill) made on ``stream`` first."""
    await bus.ensure_group(stream, group)
    events = generate(datetime.now(UTC) - timedelta(hours=2))
    await bus.publish_many(
        K.EVENTS, [events[i : i + PER_ENTRY] for i in range(0, EVENTS, PER_ENTRY)]
    )


@pytest.mark.slow
@pytest.mark.parametrize(("group", "stream"), [("sync", K.IDENTIFIED), ("collector", K.EVENTS)])
async def test_an_agent_sigkilled_three_times_loads_and_counts_every_event_once(
    crashing: Crashing, group: str, stream: str
) -> None:
    config, client, bus = crashing
    await publish(bus, group, stream)
    # sync's input comes from the chain's other agents, run here; the collector is the chain
    ctx = AgentContext(config, client, bus.keys, bus)
    chain = [
        Agent(n, AGENTS[n].make(ctx), bus, stream=AGENTS[n].stream, backoff=FAST)
        for n in (CHAIN if group == "sync" else ())
    ]
    tasks = [asyncio.create_task(agent.run()) for agent in chain]
    try:
        await kill_three_times(config, bus, group, stream)
    finally:
        for agent in chain:
            agent.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    await check_every_event_once(config, client, bus)


async def _reached(bus: Bus, stream: str, group: str, entries: float) -> bool:
    return await acknowledged(bus, stream, group) >= entries
