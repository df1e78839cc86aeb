"""A PostgreSQL warehouse that goes away and comes back: the agents wait for it (nothing is
dead-lettered, nothing lost) and every event is loaded once it is back. The server is reached
through a TCP proxy of the test's own, cut and restored like a restarting server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.agents.runtime import Agent, Backoff
from gateway.bus import Bus
from gateway.config import Config
from gateway.errors import WarehouseUnavailable
from gateway.events import Event
from gateway.keys import Keys
from gateway.warehouse import Warehouse, open_warehouse
from tests.gateway.agents.chain import ev
from tests.helpers import Proxy, eventually


@pytest.fixture
async def proxy(pg_dsn: str) -> AsyncIterator[Proxy]:
    parts = urlsplit(pg_dsn)
    opened = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await opened.start()
    yield opened
    await opened.cut()


def through(dsn: str, proxy: Proxy) -> str:
    parts = urlsplit(dsn)
    auth = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))


@pytest.mark.parametrize(
    "agents", [("collector",), ("filter", "sessions", "identity", "profile", "sync")]
)
async def test_the_agents_wait_for_a_warehouse_that_went_away(
    make_config: Callable[..., Config],
    redis_client: aioredis.Redis,
    prefix: str,
    pg_dsn: str,
    proxy: Proxy,
    agents: tuple[str, ...],
) -> None:
    dsn = through(pg_dsn, proxy)
    config = make_config(
        "",
        prefix,
        f'[warehouse]\nengine = "postgres"\ndsn = "{dsn}"\npool_size = 2',
        "[bus]\nmax_deliveries = 2\nblock = 0.02",
    )
    bus = Bus(redis_client, Keys(prefix), config.bus)
    warehouse: Warehouse = await open_warehouse(config)
    await warehouse.migrate()
    ctx = AgentContext(config, redis_client, bus.keys, bus, warehouse)
    fast = Backoff(base=0.01, cap=0.05)
    running = [
        Agent(n, AGENTS[n].make(ctx), bus, stream=AGENTS[n].stream, backoff=fast) for n in agents
    ]
    for agent in running:
        await bus.ensure_group(agent.stream, agent.name)
    tasks = [asyncio.create_task(agent.run()) for agent in running]
    try:
        await bus.publish(K.EVENTS, [ev("before")])
        await eventually(lambda: loaded(warehouse), within=20)

        await proxy.cut()  # the warehouse goes away...
        with pytest.raises(WarehouseUnavailable):
            await warehouse.fetch("SELECT 1")
        events: list[Event] = [ev(f"during-{i}", i + 1) for i in range(20)]
        await bus.publish_many(K.EVENTS, [events[i : i + 5] for i in range(0, 20, 5)])
        sync = running[-1]
        # ...and its agent keeps failing on the same batch, more often than max_deliveries
        await eventually(lambda: sync.stats.errors > 2 * config.bus.max_deliveries, within=20)

        await proxy.start()  # ...and comes back (on the same port)
        await eventually(lambda: loaded(warehouse, 21), within=30)
        assert all(agent.stats.dead_lettered == 0 for agent in running)
    finally:
        for agent in running:
            agent.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await warehouse.close()
    assert (await bus.stats())["streams"][K.EVENTS]["dead_letter"] == 0


async def loaded(warehouse: Warehouse, expected: int = 1) -> bool:
    try:
        rows = await warehouse.fetch("SELECT count(DISTINCT event_id) AS n FROM fact_event")
    except WarehouseUnavailable:
        return False
    return int(rows[0]["n"]) >= expected
