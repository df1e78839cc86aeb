"""A warehouse that goes away and comes back: the agents wait for it (nothing is dead-lettered,
nothing lost) and every event is loaded once it is back. PostgreSQL is reached through a TCP
proxy of the test's own, cut and restored like a restarting server; DuckDB's file stops being
writable, as on a full disk (a file size limit on this process: writes fail with EFBIG)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.agents.facts import fact_records
from gateway.agents.runtime import Agent, Backoff
from gateway.bus import Bus
from gateway.config import Config
from gateway.errors import WarehouseUnavailable
from gateway.events import Event
from gateway.keys import Keys
from gateway.warehouse import Warehouse, open_warehouse
from gateway.warehouse.duckdb import DuckDBWarehouse
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


@contextlib.contextmanager
def files_cannot_grow(limit: int = 4096) -> Iterator[None]:
    """Writes past ``limit`` bytes into a file of this process fail (EFBIG, not the signal), as
    DuckDB's writes do on a full disk."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


class Outage:
    """How a test's warehouse goes away and comes back."""

    section: str

    async def begin(self, warehouse: Warehouse) -> None: ...

    async def end(self) -> None: ...


class ServerDown(Outage):
    def __init__(self, pg_dsn: str, proxy: Proxy) -> None:
        self.proxy = proxy
        dsn = through(pg_dsn, proxy)
        self.section = f'[warehouse]\nengine = "postgres"\ndsn = "{dsn}"\npool_size = 2'

    async def begin(self, warehouse: Warehouse) -> None:
        await self.proxy.cut()
        with pytest.raises(WarehouseUnavailable):
            await warehouse.fetch("SELECT 1")

    async def end(self) -> None:
        await self.proxy.start()  # on the same port


class DiskFull(Outage):
    section = '[warehouse]\nengine = "duckdb"\nreaders = 2'

    def __init__(self) -> None:
        self.limit = contextlib.ExitStack()

    async def begin(self, warehouse: Warehouse) -> None:
        self.limit.enter_context(files_cannot_grow())

    async def end(self) -> None:
        self.limit.close()


@pytest.fixture(params=["postgres", "duckdb"])
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    if request.param == "postgres":
        yield ServerDown(request.getfixturevalue("pg_dsn"), request.getfixturevalue("proxy"))
        return
    disk = DiskFull()
    try:
        yield disk
    finally:
        disk.limit.close()


@pytest.mark.parametrize(
    "agents", [("collector",), ("filter", "sessions", "identity", "profile", "sync")]
)
async def test_the_agents_wait_for_a_warehouse_that_went_away(
    make_config: Callable[..., Config],
    redis_client: aioredis.Redis,
    prefix: str,
    outage: Outage,
    agents: tuple[str, ...],
) -> None:
    config = make_config("", prefix, outage.section, "[bus]\nmax_deliveries = 2\nblock = 0.02")
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

        await outage.begin(warehouse)  # the warehouse goes away...
        events: list[Event] = [ev(f"during-{i}", i + 1) for i in range(20)]
        await bus.publish_many(K.EVENTS, [events[i : i + 5] for i in range(0, 20, 5)])
        sync = running[-1]
        # ...and its agent keeps failing on the same batch, more often than max_deliveries
        await eventually(lambda: sync.stats.errors > 2 * config.bus.max_deliveries, within=20)

        await outage.end()  # ...and comes back
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


async def test_a_duckdb_file_that_cannot_be_written_is_a_wait_and_loses_no_row(
    tmp_path: Path,
) -> None:
    """The load's COMMIT fails to write: the batch is all out, the error says why and that it
    is worth waiting (not a bad batch), and the same load goes in whole afterwards."""
    warehouse = await DuckDBWarehouse.open(tmp_path / "w.duckdb", readers=1)
    try:
        await warehouse.migrate()
        loads = fact_records(
            [ev(f"e{i}", i / 60, properties={"path": f"/p/{i}" * 20}) for i in range(500)]
        )
        with files_cannot_grow(), pytest.raises(WarehouseUnavailable) as failed:
            await warehouse.insert_records(loads)
        assert "File too large" in str(failed.value)
        assert str(tmp_path / "w.duckdb") in str(failed.value)
        assert await count(warehouse) == 0
        assert await warehouse.insert_records(loads) == [500]  # not stuck in the failed one
        assert await count(warehouse) == 500
    finally:
        await warehouse.close()


async def count(warehouse: Warehouse) -> int:
    return int((await warehouse.fetch("SELECT count(*) AS n FROM fact_event"))[0]["n"])
