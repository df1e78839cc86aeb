"""The shared engine: PostgreSQL through an asyncpg pool, bulk loads with COPY.

A load COPYs the batch into a temporary table (binary protocol, one round trip for all rows),
then ``INSERT ... SELECT ... ON CONFLICT`` moves it into place in the same transaction, so a
batch is all in or all out and a replay adds nothing. Sessions run in UTC; migrations take an
advisory lock, so gateways starting together apply each version once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from gateway.errors import WarehouseError, WarehouseUnavailable
from gateway.pacing import paced
from gateway.warehouse import migrations
from gateway.warehouse.base import (
    COLUMNS_SQL,
    KEYS_SQL,
    Batch,
    Records,
    Refused,
    Table,
    load_sql,
    prepare,
    record_batches,
    table_named,
    tables_from,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Advisory lock key of the migrations, per schema (parallel test schemas do not wait).
_LOCK = "SELECT pg_advisory_lock(hashtext('touchpoint.warehouse.' || current_schema()))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext('touchpoint.warehouse.' || current_schema()))"
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
#: Failures that say the server is away, not that the statement is wrong: worth waiting for.
_AWAY = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08, a connection lost midway among them
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutting down, starting up
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
)


class PostgresWarehouse:
    """The warehouse in a PostgreSQL database; open it with :meth:`open`."""

    engine = "postgres"

    def __init__(self, pool: asyncpg.Pool, where: str) -> None:
        self._pool = pool
        self.where = where
        self._tables: dict[str, Table] | None = None
        self._closed = False

    @classmethod
    async def open(cls, dsn: str, pool_size: int = 10) -> PostgresWarehouse:
        where = _where(dsn)
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                init=_init,
                server_settings={"timezone": "UTC"},
            )
        except (*_FAILURES, ValueError) as exc:
            raise WarehouseError(f"{where}: cannot connect: {_reason(exc)}") from exc
        return cls(pool, where)

    # --- the interface ---------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        applied = await self._guard(self._migrate)
        self._tables = None
        return applied

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        return await self._load(table, rows, update=False) if rows else 0

    async def upsert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        return await self._load(table, rows, update=True) if rows else 0

    async def insert_records(self, loads: Sequence[Records]) -> list[int]:
        if not any(r.rows for r in loads):
            return [0] * len(loads)

        async def load() -> list[int]:
            tables = [await self._table(r.table) if r.rows else None for r in loads]
            try:
                return await self._apply(record_batches(tables, loads, checked=False), update=False)
            except Refused:  # the transaction rolled back: load the checked rows instead
                # Checking and converting many rows takes a while: not on the event loop.
                checked = await asyncio.to_thread(record_batches, tables, loads, checked=True)
                return await self._apply(checked, update=False)

        return await self._guard(load)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        async def fetch() -> list[dict[str, Any]]:
            return [dict(record) for record in await self._pool.fetch(sql, *params)]

        return await self._guard(fetch)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async def execute() -> None:
            await self._pool.execute(sql, *params)

        await self._guard(execute)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._pool.close()

    # --- the rest --------------------------------------------------------------------------

    async def _guard(self, job: Callable[[], Awaitable[T]]) -> T:
        """Run ``job``, translating driver errors into one that says where and why."""
        if self._closed:
            raise WarehouseError(f"{self.where}: warehouse is closed")
        try:
            return await job()
        except _AWAY as exc:
            raise WarehouseUnavailable(f"{self.where}: {_reason(exc)}") from exc
        except _FAILURES as exc:
            raise WarehouseError(f"{self.where}: {_reason(exc)}") from exc

    async def _migrate(self) -> list[int]:
        applied = []
        async with self._pool.acquire() as con:
            await con.execute(_LOCK)
            try:
                await con.execute(migrations.SCHEMA_MIGRATIONS)
                rows = await con.fetch("SELECT version FROM schema_migrations")
                done = {row["version"] for row in rows}
                for migration in migrations.pending(done):
                    async with con.transaction():
                        for statement in migration.statements:
                            await con.execute(statement)
                        await con.execute(
                            "INSERT INTO schema_migrations VALUES ($1, $2, now())",
                            migration.version,
                            migration.name,
                        )
                    log.info(
                        "warehouse %s: migration %d (%s)",
                        self.where,
                        migration.version,
                        migration.name,
                    )
                    applied.append(migration.version)
            finally:
                await con.execute(_UNLOCK)
        return applied

    async def _table(self, name: str) -> Table:
        if self._tables is None:
            columns = [dict(r) for r in await self._pool.fetch(COLUMNS_SQL)]
            keys = [dict(r) for r in await self._pool.fetch(KEYS_SQL)]
            self._tables = tables_from(columns, keys)
        return table_named(self._tables, name)

    async def _load(self, name: str, rows: Sequence[Mapping[str, Any]], *, update: bool) -> int:
        async def load() -> int:
            table = await self._table(name)
            # Checking and converting 100,000 rows takes a while: not on the event loop.
            batches = await asyncio.to_thread(prepare, table, rows, keep_last=update)
            return (await self._apply([batches], update=update))[0]

        return await self._guard(load)

    async def _apply(self, loads: list[list[Batch]], *, update: bool) -> list[int]:
        """Load each group of batches in one transaction (all or none); rows added per group."""
        records = await asyncio.to_thread(
            lambda: [[batch.records() for batch in batches] for batches in loads]
        )
        added = [0] * len(loads)
        async with self._pool.acquire() as con, con.transaction():
            for n, batches in enumerate(loads):
                for batch, copied in zip(batches, records[n], strict=True):
                    table = batch.table
                    scratch = f"_load_{table.name}"
                    await con.execute(
                        f'CREATE TEMP TABLE "{scratch}" (LIKE "{table.name}" INCLUDING DEFAULTS) '
                        "ON COMMIT DROP"
                    )
                    try:
                        await con.copy_records_to_table(
                            scratch, records=_paced(copied), columns=batch.columns
                        )
                    except (TypeError, ValueError, IndexError) as exc:  # a value, a row too short
                        error = Refused if batch.rows is not None else WarehouseError
                        raise error(f"{table.name}: {exc}") from exc
                    status = await con.execute(load_sql(batch, f'"{scratch}"', update=update))
                    await con.execute(f'DROP TABLE "{scratch}"')
                    added[n] += int(status.rsplit(" ", 1)[-1])
        return added


async def _paced(rows: Sequence[Any]) -> AsyncIterator[Any]:
    """``rows`` for COPY, which encodes them on the event loop: a slice at a time
    (:mod:`gateway.pacing`), not 80,000 rows at once."""
    async for part in paced(rows, 1024, "postgres.copy"):
        for row in part:
            yield row


async def _init(con: asyncpg.Connection) -> None:
    """JSON in and out as text the warehouse dumped / Python values (binary: COPY uses it)."""
    await con.set_type_codec(
        "json", encoder=str.encode, decoder=json.loads, schema="pg_catalog", format="binary"
    )


def _where(dsn: str) -> str:
    """``postgresql at host:port/db`` for messages, never the password."""
    try:
        url = urlsplit(dsn)
        host = url.hostname or "localhost"
        port = url.port or 5432
    except ValueError:
        return "postgresql"
    return f"postgresql at {host}:{port}{url.path}"


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, asyncpg.UndefinedTableError):
        text += " (run `touchpoint warehouse migrate`?)"
    return text
