"""ERP sync through the SQL connector: a full sync of a large catalogue, then an incremental one.

An "ERP" is made in a scratch PostgreSQL schema (``TOUCHPOINT_TEST_DATABASE_URL``, default the
loopback server): ``--products`` products (default 100,000) and their stock in ``--locations``
locations (default 10: 1,000,000 stock rows), each table with a ``write_date`` and an index on
it, and the mapping queries of ``[erp.sql]`` over them. :class:`gateway.erp.sync.ErpSync` runs
over :class:`gateway.erp.sql.SqlConnector` (``--page-size`` rows a page, default the setting's
5,000) into the warehouse (PostgreSQL in another scratch schema; ``--engines duckdb,postgres``
adds DuckDB in a temp dir) with the service Redis (``TOUCHPOINT_TEST_REDIS_URL``) under a
``bench-<hex>`` prefix.

1. **Full sync**: products, then stock, from no cursor (as ``touchpoint erp sync --full``);
   rows/s = rows read / seconds (target >= 20,000 rows/s). Checked afterwards: ``dim_product``
   and ``product_stock`` hold every row, the stock cache every SKU.
2. **Incremental sync**: ``--changes`` stock rows (default 1,000) get a new quantity and
   write date, and a tenth as many products a new price; then stock and products are synced
   from their cursors (target < 2 s for both). Checked: exactly those rows read, one
   ``Stock Changed`` event per level changed, the warehouse and the cache hold the new values.

Schemas and keys are dropped afterwards. ``--profile FILE`` writes a cProfile of the full sync
(read it with ``python -m pstats FILE``).

Run from the project root::

    .venv/bin/python bench/erp_sync.py
    .venv/bin/python bench/erp_sync.py --engines postgres,duckdb
    .venv/bin/python bench/erp_sync.py --products 10000 --profile /tmp/erp.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from serving import delete_keys

from gateway.bus import Bus
from gateway.cli import new_loop, tune_gc
from gateway.config import BusConfig, ErpConfig, ErpSqlConfig
from gateway.config.values import Secret
from gateway.erp import stock
from gateway.erp.sql import SqlConnector
from gateway.erp.sync import ErpSync
from gateway.keys import EVENTS, Keys
from gateway.redis import connect
from gateway.warehouse import Warehouse
from gateway.warehouse.duckdb import DuckDBWarehouse
from gateway.warehouse.postgres import PostgresWarehouse

REDIS_URL = os.environ.get("TOUCHPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "TOUCHPOINT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
FULL_TARGET = 20_000  # rows/s
INCREMENTAL_TARGET = 2.0  # seconds

ERP_SCHEMA = """
CREATE TABLE product (
    id integer PRIMARY KEY, code text NOT NULL UNIQUE, name text NOT NULL,
    list_price numeric(12, 2) NOT NULL, cost_price numeric(12, 2), category text,
    write_date timestamp NOT NULL);
CREATE TABLE stock_level (
    product integer NOT NULL REFERENCES product, location text NOT NULL,
    quantity numeric(12, 3) NOT NULL, write_date timestamp NOT NULL,
    PRIMARY KEY (product, location));
INSERT INTO product
SELECT n, 'SKU-' || lpad(n::text, 7, '0'), 'Product ' || n, (n % 997) + 0.99,
       (n % 997) / 2.0, 'cat-' || (n % 40), timestamp '2026-01-01' + n * interval '1 second'
FROM generate_series(1, {products}) AS n;
INSERT INTO stock_level
SELECT p.id, 'store-' || l, (p.id * 7 + l) % 50,
       timestamp '2026-01-01' + (p.id * {locations} + l) * interval '1 millisecond'
FROM product p, generate_series(1, {locations}) AS l;
CREATE INDEX ON product (write_date);
CREATE INDEX ON stock_level (write_date);
ANALYZE product;
ANALYZE stock_level;
"""
QUERIES = {
    "products": "SELECT code AS sku, name, list_price AS price, 'EUR' AS currency, category, "
    "cost_price AS cost, write_date AS cursor FROM product WHERE write_date > :cursor",
    "stock": "SELECT p.code AS sku, s.location, s.quantity, s.write_date AS cursor "
    "FROM stock_level s JOIN product p ON p.id = s.product WHERE s.write_date > :cursor",
}
CHANGES = """
UPDATE stock_level SET quantity = quantity + 1000, write_date = timestamp '2026-06-01 12:00:00'
WHERE (product, location) IN (
    SELECT product, location FROM stock_level ORDER BY md5(product || location) LIMIT {changes});
UPDATE product SET list_price = list_price + 1, write_date = timestamp '2026-06-01 12:00:00'
WHERE id IN (SELECT id FROM product ORDER BY md5(code) LIMIT {prices});
"""


@dataclass
class Run:
    engine: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, text: str, ok: bool) -> None:
        self.checks.append((text, ok))


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


async def on_server(sql: str, dsn: str = DATABASE_URL) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def open_warehouse(engine: str, tmp: str, schemas: list[str]) -> Warehouse:
    warehouse: Warehouse
    if engine == "duckdb":
        warehouse = await DuckDBWarehouse.open(os.path.join(tmp, "warehouse.duckdb"))
    else:
        schema = f"bench_wh_{secrets.token_hex(6)}"
        await on_server(f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        warehouse = await PostgresWarehouse.open(with_search_path(DATABASE_URL, schema))
    await warehouse.migrate()
    return warehouse


async def one_engine(
    engine: str, erp_dsn: str, args: argparse.Namespace, profiler: cProfile.Profile | None
) -> Run:
    run = Run("DuckDB" if engine == "duckdb" else "PostgreSQL")
    prefix = f"bench-{secrets.token_hex(4)}"
    keys = Keys(prefix)
    client = connect(REDIS_URL, timeout=30.0)
    schemas: list[str] = []
    settings = ErpSqlConfig(
        dsn=Secret(erp_dsn),
        products=QUERIES["products"],
        stock=QUERIES["stock"],
        page_size=args.page_size,
    )
    connector = SqlConnector(settings, "bench")
    with tempfile.TemporaryDirectory(prefix="bench-erp-") as tmp:
        warehouse = await open_warehouse(engine, tmp, schemas)
        try:
            bus = Bus(client, keys, BusConfig())
            syncer = ErpSync(connector, warehouse, client, keys, bus, ErpConfig())
            stock_rows = args.products * args.locations
            print(f"{run.engine}: full sync of {args.products:,} products and {stock_rows:,} "
                  "stock rows...", file=sys.stderr)  # fmt: skip
            for entity in ("products", "stock"):
                if profiler is not None:
                    profiler.enable()
                began = time.perf_counter()
                result = await syncer.sync(entity, full=True)
                run.seconds[f"full {entity}"] = time.perf_counter() - began
                if profiler is not None:
                    profiler.disable()
                run.rows[f"full {entity}"] = result.rows
                run.check(f"full {entity}: no error ({result.error})", result.error is None)
                print(f"  {entity}: {result.rows:,} rows in {run.seconds[f'full {entity}']:.2f} s",
                      file=sys.stderr)  # fmt: skip
            counts = await warehouse.fetch(
                "SELECT (SELECT count(*) FROM dim_product) AS products, "
                "(SELECT count(*) FROM product_stock) AS stock"
            )
            run.check(f"dim_product holds {args.products:,} rows",
                      counts[0]["products"] == args.products)  # fmt: skip
            run.check(f"product_stock holds {stock_rows:,} rows", counts[0]["stock"] == stock_rows)
            last = f"SKU-{args.products:07}"
            levels = await stock.stock_levels(client, keys, last)
            run.check(f"the stock cache has {last} in {args.locations} locations",
                      len(levels) == args.locations)  # fmt: skip

            prices = max(1, args.changes // 10)
            await on_server(CHANGES.format(changes=args.changes, prices=prices), erp_dsn)
            began = time.perf_counter()
            changed_stock = await syncer.sync("stock")
            changed_products = await syncer.sync("products")
            run.seconds["incremental"] = time.perf_counter() - began
            run.rows["incremental"] = changed_stock.rows + changed_products.rows
            run.check(
                f"incremental: {args.changes:,} stock rows and {prices:,} products read, "
                f"{args.changes:,} stock changes",
                (changed_stock.rows, changed_stock.changed, changed_products.rows)
                == (args.changes, args.changes, prices),
            )
            events = [
                e
                for entry in await bus.latest(EVENTS, args.changes + 100)
                for e in entry.events
                if e.name == "Stock Changed"
            ]
            run.check(f"{args.changes:,} Stock Changed events published",
                      len(events) == args.changes)  # fmt: skip
            moved = await warehouse.fetch(
                "SELECT count(*) AS n FROM product_stock WHERE quantity >= 1000"
            )
            run.check("product_stock holds the new quantities", moved[0]["n"] == args.changes)
            if events:
                sku = events[0].properties["sku"]
                cached = await stock.stock_levels(client, keys, sku)
                location = events[0].properties["location"]
                run.check("the stock cache holds the new quantity",
                          cached.get(location) == events[0].properties["new"])  # fmt: skip
        finally:
            await connector.close()
            await warehouse.close()
            await delete_keys(client, prefix)
            await client.aclose()
            for schema in schemas:
                await on_server(f'DROP SCHEMA "{schema}" CASCADE')
    return run


async def bench(args: argparse.Namespace, profiler: cProfile.Profile | None) -> list[Run]:
    schema = f"bench_erp_{secrets.token_hex(6)}"
    erp_dsn = with_search_path(DATABASE_URL, schema)
    await on_server(f'CREATE SCHEMA "{schema}"')
    try:
        began = time.perf_counter()
        await on_server(
            ERP_SCHEMA.format(products=args.products, locations=args.locations), erp_dsn
        )
        print(f"ERP made in {time.perf_counter() - began:.1f} s", file=sys.stderr)
        runs = []
        for engine in args.engines.split(","):
            # Every engine starts from the same ERP: the changes of the last one undone.
            await on_server(
                "UPDATE stock_level SET quantity = quantity - 1000, write_date = "
                "timestamp '2026-01-01' WHERE quantity >= 1000; UPDATE product SET "
                "list_price = list_price - 1, write_date = timestamp '2026-01-01' + id * "
                "interval '1 second' WHERE write_date = timestamp '2026-06-01 12:00:00'",
                erp_dsn,
            )
            runs.append(await one_engine(engine, erp_dsn, args, profiler))
        return runs
    finally:
        await on_server(f'DROP SCHEMA "{schema}" CASCADE')


def report(runs: Sequence[Run], argv: Sequence[str]) -> str:
    lines = [
        "| warehouse | full sync: rows | seconds | rows/s | incremental: rows | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        rows = run.rows["full products"] + run.rows["full stock"]
        took = run.seconds["full products"] + run.seconds["full stock"]
        lines.append(
            f"| {run.engine} | {rows:,} | {took:.2f} | {rows / took:,.0f} | "
            f"{run.rows['incremental']:,} | {run.seconds['incremental']:.2f} |"
        )
    for run in runs:
        lines.append("")
        for entity in ("products", "stock"):
            n, s = run.rows[f"full {entity}"], run.seconds[f"full {entity}"]
            lines.append(
                f"- {run.engine} full {entity}: {n:,} rows in {s:.2f} s, {n / s:,.0f} rows/s"
            )
        full = sum(run.rows[f"full {e}"] for e in ("products", "stock"))
        rate = full / (run.seconds["full products"] + run.seconds["full stock"])
        lines.append(
            f"- target >= {FULL_TARGET:,} rows/s: {'met' if rate >= FULL_TARGET else 'NOT met'}; "
            f"incremental < {INCREMENTAL_TARGET:g} s: "
            f"{'met' if run.seconds['incremental'] < INCREMENTAL_TARGET else 'NOT met'}"
        )
        lines += [f"- {'ok' if ok else 'FAILED'}: {text}" for text, ok in run.checks]
    names = ("TOUCHPOINT_TEST_REDIS_URL", "TOUCHPOINT_TEST_DATABASE_URL")
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in names if name in os.environ]
    command = " ".join([*env, shlex.join([".venv/bin/python", "bench/erp_sync.py", *argv])])
    return "\n".join([*lines, "", "Reproduce with:", "", f"    {command}"])


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--locations", type=int, default=10)
    parser.add_argument("--changes", type=int, default=1_000, help="stock rows changed")
    parser.add_argument("--page-size", type=int, default=ErpSqlConfig().page_size)
    parser.add_argument("--engines", default="postgres", help="warehouses: postgres, duckdb")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the full syncs into FILE")
    args = parser.parse_args(argv)
    if unknown := set(args.engines.split(",")) - {"duckdb", "postgres"}:
        parser.error(f"--engines: unknown {', '.join(sorted(unknown))} (duckdb, postgres)")
    profiler = cProfile.Profile() if args.profile else None
    tune_gc()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runs = runner.run(bench(args, profiler))
    if profiler is not None:
        profiler.dump_stats(args.profile)
    print(report(runs, argv))
    return 1 if any(not ok for run in runs for _, ok in run.checks) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
