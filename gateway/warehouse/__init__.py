"""The warehouse: a star schema of facts (events, sessions, sales, messages) and dimensions
(customers, products, stores, channels, dates, campaigns) on DuckDB (embedded, the default) or
PostgreSQL (shared by several gateways), behind one interface.

    base.py        the Warehouse Protocol, table shapes, row preparation for bulk loads
    migrations.py  the schema as versioned SQL both engines run
    duckdb.py      DuckDB: one writer thread, reads in a small pool, Arrow bulk loads
    postgres.py    PostgreSQL: asyncpg pool, COPY bulk loads
    pii.py         emails and phone numbers as keyed hashes
    olap.py        named cube queries (measures x dimensions x filters) compiled for both
"""

from __future__ import annotations

from gateway.config import Config
from gateway.errors import WarehouseError
from gateway.warehouse.base import Warehouse

__all__ = ["Warehouse", "duckdb_path", "open_warehouse"]


def duckdb_path(config: Config) -> str:
    """Where the embedded engine keeps its file."""
    return str(config.data_dir / "warehouse.duckdb")


async def open_warehouse(config: Config) -> Warehouse:
    """The engine ``warehouse.engine`` names, connected (not migrated: see ``migrate()``)."""
    if config.warehouse.engine == "postgres":
        from gateway.warehouse.postgres import PostgresWarehouse

        if not config.warehouse.dsn.is_set:
            raise WarehouseError('warehouse.dsn is not set (engine = "postgres" needs it)')
        return await PostgresWarehouse.open(
            config.warehouse.dsn.get(), pool_size=config.warehouse.pool_size
        )
    from gateway.warehouse.duckdb import DuckDBWarehouse

    return await DuckDBWarehouse.open(
        duckdb_path(config), readers=config.warehouse.readers, threads=config.warehouse.threads
    )
