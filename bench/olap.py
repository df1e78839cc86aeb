"""OLAP cube query and bulk loads on both warehouse engines, side by side.

Generates fact_event rows (and one fact_sale line per ten events) with DuckDB itself, loads
them the way the warehouse loads new rows (DuckDB: an Arrow table, ``INSERT ... SELECT``, which
fails on a key the table holds, and the warehouse then goes again with ``ON CONFLICT DO
NOTHING``; PostgreSQL: COPY into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT``),
then times the cube day x channel x category with events, visitors (fact_event) and revenue
(fact_sale) through ``gateway.warehouse.olap.run``: one SQL statement per fact, merged in
Python. Also times ``Warehouse.insert()`` of Python row dicts, the path the sync agent takes.
PostgreSQL works in a schema of its own, dropped afterwards; DuckDB in a temp dir.

    .venv/bin/python bench/olap.py                     # 10,000,000 events on each (~3 min)
    .venv/bin/python bench/olap.py --pg-rows 2000000   # fewer on PostgreSQL (~1 min)
    .venv/bin/python bench/olap.py --rows 1000000 --pg-rows 1000000 --insert-rows 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.warehouse import Warehouse  # noqa: E402
from gateway.warehouse.duckdb import DuckDBWarehouse  # noqa: E402
from gateway.warehouse.olap import parse_query, run  # noqa: E402
from gateway.warehouse.postgres import PostgresWarehouse  # noqa: E402

DATABASE_URL = os.environ.get(
    "TOUCHPOINT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CUBE = parse_query("events,visitors,revenue", "day,channel,category")
DAYS = 30

#: ``n`` fact_event rows over 30 days of January 2026: 5 channels, 8 categories, 5 % bots,
#: a third of the events from 200,000 known customers, the rest from 1,000,000 anonymous ids.
EVENTS_SQL = """
SELECT 'e' || i AS event_id, 'shop' AS site,
       ['web', 'email', 'pos', 'kiosk', 'mobile'][1 + CAST(hash(i * 3) % 5 AS BIGINT)] AS channel,
       'track' AS type, 'Product Viewed' AS name, ts, ts AS received_at,
       CAST(year(ts) * 10000 + month(ts) * 100 + day(ts) AS INTEGER) AS date_key,
       CASE WHEN hash(i * 5) % 3 = 0 THEN 'c' || (hash(i * 7) % 200000) END AS customer_id,
       'a' || (hash(i * 11) % 1000000) AS anonymous_id,
       hash(i * 13) % 20 = 0 AS is_bot,
       ['desktop', 'mobile', 'tablet'][1 + CAST(hash(i * 17) % 3 AS BIGINT)] AS device_type,
       ['shoes', 'bags', 'coats', 'hats', 'gloves', 'socks', 'shirts', 'scarves']
           [1 + CAST(hash(i * 19) % 8 AS BIGINT)] AS category,
       'SKU-' || (hash(i * 23) % 5000) AS sku
FROM (SELECT i, TIMESTAMPTZ '2026-01-01 00:00:00+00'
                + to_seconds(CAST(hash(i * 2) % {seconds} AS BIGINT)) AS ts
      FROM range({n}) t(i))
"""
#: One sale line per ten events; one order in ten is a return.
SALES_SQL = """
SELECT 'o' || (i // 3) AS order_id, CAST(i % 3 AS INTEGER) AS line_no, ts,
       CAST(year(ts) * 10000 + month(ts) * 100 + day(ts) AS INTEGER) AS date_key,
       ['web', 'email', 'pos', 'kiosk', 'mobile'][1 + CAST(hash(i * 3) % 5 AS BIGINT)] AS channel,
       ['shoes', 'bags', 'coats', 'hats', 'gloves', 'socks', 'shirts', 'scarves']
           [1 + CAST(hash(i * 19) % 8 AS BIGINT)] AS category,
       CAST(1 + hash(i * 29) % 3 AS DOUBLE) AS quantity,
       CAST(hash(i * 31) % 20000 AS DOUBLE) / 100 AS revenue,
       CASE WHEN (i // 3) % 10 = 0 THEN 'return' ELSE 'sale' END AS kind
FROM (SELECT i, TIMESTAMPTZ '2026-01-01 00:00:00+00'
                + to_seconds(CAST(hash(i * 2) % {seconds} AS BIGINT)) AS ts
      FROM range({n}) t(i))
"""


def generated(sql: str, n: int) -> Any:
    """The rows of ``sql`` as an Arrow table, made by an in-memory DuckDB (not timed)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        return con.sql(sql.format(n=n, seconds=DAYS * 86_400)).to_arrow_table()
    finally:
        con.close()


def columns(arrow: Any) -> str:
    return ", ".join(f'"{name}"' for name in arrow.column_names)


def python_rows(n: int, start: int) -> list[dict[str, Any]]:
    """What the sync agent hands ``Warehouse.insert()``: one dict per event."""
    t0 = datetime(2026, 2, 1, tzinfo=UTC)
    return [
        {
            "event_id": f"p{i}", "site": "shop", "channel": "web", "type": "track",
            "name": "Product Viewed", "ts": t0 + timedelta(seconds=i), "received_at": t0,
            "anonymous_id": f"a{i % 10_000}", "is_bot": False, "device_type": "desktop",
            "category": "shoes", "sku": f"SKU-{i % 500}", "properties": '{"price":9.5}',
        }
        for i in range(start, start + n)
    ]  # fmt: skip


async def insert_rate(warehouse: Warehouse, n: int, batch: int) -> float:
    """Rows/s of ``Warehouse.insert()`` (row dicts in, ``batch`` per call; not generation)."""
    batches = [python_rows(min(batch, n - s), s) for s in range(0, n, batch)]
    started = time.perf_counter()
    for rows in batches:
        await warehouse.insert("fact_event", rows)
    return n / (time.perf_counter() - started)


async def cube(warehouse: Warehouse, repeat: int) -> tuple[float, float, int]:
    """(first, median of the next ``repeat``) seconds of the cube query, and its row count."""
    started = time.perf_counter()
    result = await run(warehouse, CUBE)
    first = time.perf_counter() - started
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run(warehouse, CUBE)
        times.append(time.perf_counter() - started)
    return first, statistics.median(times), len(result.rows)


# --- DuckDB --------------------------------------------------------------------------------------


async def bench_duckdb(n: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    path = folder / "warehouse.duckdb"
    warehouse = await DuckDBWarehouse.open(path, readers=4)
    await warehouse.migrate()
    await warehouse.close()
    events, sales = generated(EVENTS_SQL, n), generated(SALES_SQL, n // 10)
    con = duckdb.connect(str(path))  # the warehouse's own load statement, timed alone
    started = time.perf_counter()
    for table, arrow in (("fact_event", events), ("fact_sale", sales)):
        con.register("batch", arrow)
        con.execute(f"INSERT INTO {table} ({columns(arrow)}) SELECT {columns(arrow)} FROM batch")
        con.unregister("batch")
    load = (n + n // 10) / (time.perf_counter() - started)
    con.close()
    del events, sales
    warehouse = await DuckDBWarehouse.open(path, readers=4)
    try:
        first, median, rows = await cube(warehouse, args.repeat)
        insert = await insert_rate(warehouse, args.insert_rows, args.batch)
    finally:
        await warehouse.close()
    return {"rows": n, "load": load, "first": first, "median": median, "cube_rows": rows,
            "insert": insert}  # fmt: skip


# --- PostgreSQL ----------------------------------------------------------------------------------


async def copy_load(con: asyncpg.Connection, table: str, arrow: Any, folder: Path) -> None:
    """COPY a CSV file into a temporary table, then INSERT ... ON CONFLICT (as the warehouse)."""
    csv_path = folder / f"{table}.csv"
    writer = duckdb.connect()
    writer.register("batch", arrow)
    writer.execute(f"COPY batch TO '{csv_path}' (HEADER false)")
    writer.close()
    async with con.transaction():
        await con.execute(f'CREATE TEMP TABLE "_load" (LIKE {table}) ON COMMIT DROP')
        await con.copy_to_table(
            "_load", source=csv_path, columns=list(arrow.column_names), format="csv"
        )
        await con.execute(
            f"INSERT INTO {table} ({columns(arrow)}) SELECT {columns(arrow)} FROM _load "
            "ON CONFLICT DO NOTHING"
        )
    csv_path.unlink()


async def bench_postgres(n: int, args: argparse.Namespace, folder: Path) -> dict[str, Any] | str:
    schema = f"bench_{secrets.token_hex(4)}"
    try:
        admin = await asyncpg.connect(DATABASE_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL unavailable at {DATABASE_URL.split('@')[-1]}: {exc}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    dsn = f"{DATABASE_URL}{'&' if '?' in DATABASE_URL else '?'}search_path={schema}"
    try:
        warehouse = await PostgresWarehouse.open(dsn, pool_size=4)
        await warehouse.migrate()
        events, sales = generated(EVENTS_SQL, n), generated(SALES_SQL, n // 10)
        con = await asyncpg.connect(dsn)
        started = time.perf_counter()
        await copy_load(con, "fact_event", events, folder)
        await copy_load(con, "fact_sale", sales, folder)
        load = (n + n // 10) / (time.perf_counter() - started)
        await con.execute("ANALYZE fact_event; ANALYZE fact_sale")
        await con.close()
        del events, sales
        try:
            first, median, rows = await cube(warehouse, args.repeat)
            insert = await insert_rate(warehouse, args.insert_rows, args.batch)
        finally:
            await warehouse.close()
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    return {"rows": n, "load": load, "first": first, "median": median, "cube_rows": rows,
            "insert": insert}  # fmt: skip


# --- report --------------------------------------------------------------------------------------


def report(duck: dict[str, Any], pg: dict[str, Any] | str, args: argparse.Namespace) -> str:
    def cell(result: dict[str, Any] | str, key: str, form: str) -> str:
        return "n/a" if isinstance(result, str) else form.format(result[key])

    if isinstance(pg, str):
        postgres = pg
    elif pg["rows"] < duck["rows"]:
        minutes = duck["rows"] * 1.1 / pg["load"] / 60
        postgres = (
            f"{pg['rows']:,} rows: fewer than DuckDB (loading {duck['rows']:,} at the rate "
            f"below takes ~{minutes:.0f} min; --pg-rows {duck['rows']} to run it)"
        )
    else:
        postgres = f"{pg['rows']:,} rows"
    lines = [
        f"Cube day x channel x category: events, visitors (fact_event) and revenue (fact_sale, "
        f"one line per ten events); {duck['cube_rows']:,} result rows.",
        f"DuckDB on {duck['rows']:,} fact_event rows; PostgreSQL on {postgres}.",
        "",
        "| measure | DuckDB | PostgreSQL | target |",
        "|---|---:|---:|---|",
        f"| fact_event rows | {duck['rows']:,} | {cell(pg, 'rows', '{:,}')} | |",
        f"| cube query, first run | {duck['first']:.3f} s | {cell(pg, 'first', '{:.3f} s')} | |",
        f"| cube query, median of {args.repeat} more | {duck['median']:.3f} s "
        f"| {cell(pg, 'median', '{:.3f} s')} | DuckDB < 1 s |",
        f"| bulk load (DuckDB: Arrow + INSERT; PostgreSQL: COPY + INSERT ON "
        f"CONFLICT) | {duck['load']:,.0f} rows/s | {cell(pg, 'load', '{:,.0f} rows/s')} | |",
        f"| Warehouse.insert() of Python dicts, {args.batch:,} per call "
        f"({args.insert_rows:,} rows) | {duck['insert']:,.0f} rows/s "
        f"| {cell(pg, 'insert', '{:,.0f} rows/s')} | |",
        "",
        "Reproduce: .venv/bin/python bench/olap.py"
        + (f" --rows {args.rows}" if args.rows != 10_000_000 else "")
        + (f" --pg-rows {args.pg_rows}" if args.pg_rows != 10_000_000 else ""),
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="fact_event rows, DuckDB")
    parser.add_argument("--pg-rows", type=int, default=10_000_000, help="the same, PostgreSQL")
    parser.add_argument("--repeat", type=int, default=5, help="timed cube runs after the first")
    parser.add_argument("--insert-rows", type=int, default=500_000, help="rows for insert()")
    parser.add_argument("--batch", type=int, default=50_000, help="rows per insert() call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tp-olap-") as tmp:
        folder = Path(tmp)
        print(f"DuckDB: {args.rows:,} events...", file=sys.stderr)
        duck = await bench_duckdb(args.rows, args, folder)
        print(f"PostgreSQL: {args.pg_rows:,} events...", file=sys.stderr)
        pg = await bench_postgres(args.pg_rows, args, folder)
    print(report(duck, pg, args))


if __name__ == "__main__":
    asyncio.run(main())
