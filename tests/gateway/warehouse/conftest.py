"""The warehouse suite runs on both engines: every test using ``warehouse`` (or ``engine``)
runs on DuckDB (a file in the test's tmp dir) and on PostgreSQL (a schema of its own, dropped
afterwards, so parallel sessions never collide)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from gateway.warehouse import Warehouse

OpenWarehouse = Callable[[], Awaitable[Warehouse]]


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections work in ``schema`` (asyncpg passes unknown query parameters
    on as server settings)."""
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


def on_server(url: str, sql: str) -> None:
    """Run ``sql`` on the server at ``url``, in a thread with a loop of its own (so fixtures
    using this work for sync and async tests alike)."""

    async def run() -> None:
        import asyncpg

        connection = await asyncpg.connect(url, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def pg_dsn(postgres_url: str) -> Iterator[str]:
    """A DSN on a fresh schema ``test_<random>``; the schema is dropped afterwards."""
    schema = f"test_{secrets.token_hex(6)}"
    on_server(postgres_url, f'CREATE SCHEMA "{schema}"')
    yield with_search_path(postgres_url, schema)
    on_server(postgres_url, f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def warehouse_section(engine: str, request: pytest.FixtureRequest) -> str:
    """The ``[warehouse]`` table of a config for this engine (``make_config(..., section)``)."""
    if engine == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        return f'[warehouse]\nengine = "postgres"\ndsn = "{dsn}"\npool_size = 4'
    return '[warehouse]\nengine = "duckdb"\nreaders = 2'


@pytest.fixture
async def open_engine(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenWarehouse]:
    """Opens (without migrating) a warehouse on this test's store; all closed afterwards."""
    from gateway.warehouse.duckdb import DuckDBWarehouse
    from gateway.warehouse.postgres import PostgresWarehouse

    dsn = request.getfixturevalue("pg_dsn") if engine == "postgres" else ""
    opened: list[Warehouse] = []

    async def open_() -> Warehouse:
        warehouse: Warehouse
        if engine == "postgres":
            warehouse = await PostgresWarehouse.open(dsn, pool_size=4)
        else:
            warehouse = await DuckDBWarehouse.open(tmp_path / "warehouse.duckdb", readers=2)
        opened.append(warehouse)
        return warehouse

    yield open_
    for warehouse in opened:
        await warehouse.close()


@pytest.fixture
async def warehouse(open_engine: OpenWarehouse) -> Warehouse:
    """A migrated warehouse on DuckDB, then on PostgreSQL."""
    opened = await open_engine()
    await opened.migrate()
    return opened
