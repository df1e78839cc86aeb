"""Both engines behind one interface: migrations, idempotent loads, upserts, bulk loads, reads
that leave the event loop free, and errors that say what is wrong."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.agents.sync import sessions_handler
from gateway.bus import Entry
from gateway.datamart.records import SessionRecord
from gateway.datamart.sessions import pack_records
from gateway.errors import WarehouseError
from gateway.events import CHANNELS
from gateway.warehouse import Warehouse, migrations
from gateway.warehouse.base import Records
from gateway.warehouse.duckdb import DuckDBWarehouse
from gateway.warehouse.postgres import PostgresWarehouse
from tests.gateway.warehouse.conftest import OpenWarehouse

NOW = datetime(2026, 1, 5, 13, 30, tzinfo=UTC)
LATEST = max(m.version for m in migrations.MIGRATIONS)


def events(n: int, start: int = 0, channel: str = "web") -> list[dict[str, object]]:
    return [
        {"event_id": f"e{i}", "channel": channel, "ts": NOW + timedelta(seconds=i), "sku": "A"}
        for i in range(start, start + n)
    ]


async def test_migrations_apply_once(open_engine: OpenWarehouse) -> None:
    warehouse = await open_engine()
    assert await warehouse.migrate() == list(range(1, LATEST + 1))
    assert await warehouse.migrate() == []
    await warehouse.close()
    again = await open_engine()  # the file / the database kept them
    assert await again.migrate() == []
    rows = await again.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, LATEST + 1))


async def test_an_upgrade_keeps_the_products_and_marks_them_sold(
    open_engine: OpenWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = await open_engine()
    with monkeypatch.context() as patch:  # a warehouse made before version 3
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
        assert await warehouse.migrate() == [1, 2]
    await warehouse.upsert("dim_product", [{"sku": "A", "name": "Boot", "price": 50.0}])
    assert await warehouse.migrate() == list(range(3, LATEST + 1))
    assert await warehouse.fetch("SELECT sku, active FROM dim_product") == [
        {"sku": "A", "active": True}
    ]
    await warehouse.close()


async def test_a_failing_migration_leaves_nothing_behind(
    open_engine: OpenWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = await open_engine()
    await warehouse.migrate()
    broken = migrations.Migration(
        LATEST + 1, "broken", ("CREATE TABLE half_done (x INTEGER)", "SELECT * FROM nowhere")
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    with pytest.raises(WarehouseError, match="nowhere"):
        await warehouse.migrate()
    tables = await warehouse.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_name = $1", ["half_done"]
    )
    assert tables == []
    versions = await warehouse.fetch("SELECT max(version) AS v FROM schema_migrations")
    assert versions == [{"v": LATEST}]


async def test_gateways_starting_together_apply_each_version_once(pg_dsn: str) -> None:
    """Several gateways share one PostgreSQL (DuckDB has one process, one writer, by design)."""
    first = await PostgresWarehouse.open(pg_dsn, pool_size=2)
    second = await PostgresWarehouse.open(pg_dsn, pool_size=2)
    try:
        applied = await asyncio.gather(first.migrate(), second.migrate())
    finally:
        await first.close()
        await second.close()
    assert sorted(applied[0] + applied[1]) == list(range(1, LATEST + 1))


async def test_dimensions_are_seeded(warehouse: Warehouse) -> None:
    channels = await warehouse.fetch("SELECT channel FROM dim_channel")
    assert {r["channel"] for r in channels} >= CHANNELS, "a new channel needs a migration"
    [row] = await warehouse.fetch("SELECT * FROM dim_date WHERE date_key = $1", [20210103])
    assert row == {
        "date_key": 20210103, "date": date(2021, 1, 3), "year": 2021, "quarter": 1,
        "month": 1, "day": 3, "weekday": 7, "iso_week": 53, "iso_year": 2020,
    }  # fmt: skip
    [span] = await warehouse.fetch(
        "SELECT count(*) AS n, min(date) AS a, max(date) AS b FROM dim_date"
    )
    assert span == {"n": 36_525, "a": date(2000, 1, 1), "b": date(2099, 12, 31)}


async def test_insert_is_idempotent_on_the_primary_key(warehouse: Warehouse) -> None:
    assert await warehouse.insert("fact_event", events(10)) == 10
    assert await warehouse.insert("fact_event", events(10)) == 0
    assert await warehouse.insert("fact_event", events(10, start=5)) == 5
    duplicated = events(3, start=100) + events(3, start=100)  # twice in one batch
    assert await warehouse.insert("fact_event", duplicated) == 3
    [row] = await warehouse.fetch("SELECT count(*) AS n FROM fact_event")
    assert row["n"] == 18
    lines = [{"order_id": "o1", "line_no": n, "ts": NOW, "kind": "sale"} for n in (0, 1, 0)]
    assert await warehouse.insert("fact_sale", lines) == 2  # a composite key
    assert await warehouse.insert("fact_sale", lines) == 0


async def test_a_row_that_breaks_another_constraint_is_named_and_loads_nothing(
    warehouse: Warehouse,
) -> None:
    """Not a key the table holds (DuckDB goes again with ON CONFLICT only for those): the
    engine's own reason goes up, and the other tables' rows of the call stay out."""
    loads = [
        Records("fact_event", ("event_id", "ts"), [("k1", NOW)]),
        Records("fact_sale", ("order_id", "line_no", "ts", "kind"), [("o9", 0, NOW, "gift")]),
    ]
    with pytest.raises(WarehouseError, match=r"(?i)check constraint"):
        await warehouse.insert_records(loads)
    assert await warehouse.fetch("SELECT count(*) AS n FROM fact_event") == [{"n": 0}]
    assert await warehouse.insert_records(loads[:1]) == [1]  # the warehouse goes on


async def test_records_of_several_tables_load_together(warehouse: Warehouse) -> None:
    """Rows as tuples (the sync agent's facts): idempotent like insert(), all tables of one
    call in one transaction, a bad value named by its table and column."""
    event_columns = ("event_id", "channel", "ts", "sku")
    rows = [(f"e{i}", "web", NOW + timedelta(seconds=i), "A") for i in range(4)]
    sale_columns = ("order_id", "line_no", "ts", "kind", "revenue")
    lines = [("o1", 0, NOW, "sale", 10.0), ("o1", 1, NOW, "sale", 5.5)]
    loads = [
        Records("fact_event", event_columns, rows + rows[:1]),  # e0 twice: counted once
        Records("fact_sale", sale_columns, lines),
        Records("fact_message", ("message_id", "ts"), []),
    ]
    assert await warehouse.insert_records(loads) == [4, 2, 0]
    assert await warehouse.insert_records(loads) == [0, 0, 0]
    [back] = await warehouse.fetch("SELECT date_key, sku FROM fact_event WHERE event_id = 'e3'")
    assert back == {"date_key": 20260105, "sku": "A"}  # date_key derived from ts
    bad = [
        Records("fact_event", event_columns, [("e9", "web", NOW, "A")]),
        Records("fact_sale", sale_columns, [("o2", 0, NOW, "sale", "lots")]),
    ]
    with pytest.raises(WarehouseError, match=r"fact_sale\.revenue"):
        await warehouse.insert_records(bad)
    assert await warehouse.fetch("SELECT count(*) AS n FROM fact_event") == [{"n": 4}]  # no e9
    # with nothing to derive, rows go as they are; a value that is not the column's type as is
    # (an ISO string for a time, a dict for JSON) sends the load through the converting path
    given = ("event_id", "ts", "date_key", "properties")
    typed = [("t1", NOW, 20260105, '{"a":1}'), ("t1", NOW, 20260105, "{}")]
    assert await warehouse.insert_records([Records("fact_event", given, typed)]) == [1]
    loose = [("t2", "2026-01-05T10:00:00+00:00", 20260105, {"a": [1, 2]})]
    assert await warehouse.insert_records([Records("fact_event", given, loose)]) == [1]
    found = await warehouse.fetch(
        "SELECT event_id, ts, properties FROM fact_event WHERE event_id LIKE 't%' ORDER BY 1"
    )
    assert found == [
        {"event_id": "t1", "ts": NOW, "properties": {"a": 1}},
        {"event_id": "t2", "ts": datetime(2026, 1, 5, 10, tzinfo=UTC), "properties": {"a": [1, 2]}},
    ]
    with pytest.raises(WarehouseError, match="unknown column"):
        await warehouse.insert_records([Records("fact_event", ("event_id", "nope"), [("x", 1)])])
    with pytest.raises(WarehouseError, match="every row needs 2 values"):
        await warehouse.insert_records([Records("fact_event", ("event_id", "sku"), [("x",)])])


async def test_rows_come_back_as_they_went_in(warehouse: Warehouse) -> None:
    row = {
        "event_id": "e1", "ts": "2026-01-05T23:30:00-02:00", "channel": "web",
        "properties": {"sku": "A", "n": [1, 2]}, "revenue": 9.5, "is_bot": True,
    }  # fmt: skip
    await warehouse.insert("fact_event", [row])
    [back] = await warehouse.fetch(
        "SELECT event_id, ts, date_key, properties, revenue, is_bot, site FROM fact_event"
    )
    assert back == {
        "event_id": "e1", "ts": datetime(2026, 1, 6, 1, 30, tzinfo=UTC),
        "date_key": 20260106,  # derived from ts, in UTC
        "properties": {"sku": "A", "n": [1, 2]}, "revenue": 9.5, "is_bot": True, "site": None,
    }  # fmt: skip


async def test_upsert_updates_the_columns_given(warehouse: Warehouse) -> None:
    product = {"sku": "A", "name": "Boot", "category": "shoes", "price": 50.0}
    assert await warehouse.upsert("dim_product", [product]) == 1
    changed = [{"sku": "A", "price": 45.0}, {"sku": "B", "name": "Hat", "price": 9.0}]
    assert await warehouse.upsert("dim_product", changed) == 2
    rows = await warehouse.fetch("SELECT sku, name, category, price FROM dim_product ORDER BY sku")
    assert rows == [
        {"sku": "A", "name": "Boot", "category": "shoes", "price": 45.0},
        {"sku": "B", "name": "Hat", "category": None, "price": 9.0},
    ]
    last_wins = [{"sku": "A", "price": 1.0}, {"sku": "A", "price": 2.0}]
    assert await warehouse.upsert("dim_product", last_wins) == 1
    assert await warehouse.fetch("SELECT price FROM dim_product WHERE sku = $1", ["A"]) == [
        {"price": 2.0}
    ]


def visit_record(session_id: str, events: int) -> SessionRecord:
    start = datetime(2026, 1, 6, 9, tzinfo=UTC)
    return SessionRecord(
        session_id=session_id, site="demo", visitor_id="a1", channel="web", started_at=start,
        ended_at=start + timedelta(minutes=events), duration=60.0 * events,
        referrer_class="direct", pages=events, events=events, bounced=events == 1,
        converted=False, end_reason="timeout", first_event_id="e1", last_event_id=f"e{events}",
    )  # fmt: skip


async def test_a_visit_row_only_grows(warehouse: Warehouse) -> None:
    """A visit's record published again with fewer events (a replay of an older one) does not
    take its fact_session row back; one with more replaces it, within a batch too."""
    load = sessions_handler(warehouse)

    async def deliver(*records: SessionRecord) -> None:
        await load([Entry("0-1", [], raw=pack_records(list(records)))])

    async def events_of() -> dict[str, int]:
        rows = await warehouse.fetch("SELECT session_id, events FROM fact_session")
        return {row["session_id"]: row["events"] for row in rows}

    await deliver(visit_record("s1", 5), visit_record("s2", 2))
    await deliver(visit_record("s1", 3))  # an older record, replayed
    assert await events_of() == {"s1": 5, "s2": 2}
    await deliver(visit_record("s1", 7), visit_record("s2", 4), visit_record("s1", 6))
    assert await events_of() == {"s1": 7, "s2": 4}


async def test_execute_writes_in_turn_with_loads(warehouse: Warehouse) -> None:
    await warehouse.insert("fact_event", events(5) + events(5, start=5, channel="pos"))
    await warehouse.execute("DELETE FROM fact_event WHERE channel = $1", ["pos"])
    assert await warehouse.fetch("SELECT count(*) AS n FROM fact_event") == [{"n": 5}]


async def test_bulk_load_of_100000_rows(warehouse: Warehouse) -> None:
    rows = [
        {"event_id": f"b{i}", "channel": "web", "ts": NOW + timedelta(seconds=i),
         "anonymous_id": f"a{i % 977}", "properties": {"i": i}}
        for i in range(100_000)
    ]  # fmt: skip
    assert await warehouse.insert("fact_event", rows) == 100_000
    assert await warehouse.insert("fact_event", rows) == 0
    [row] = await warehouse.fetch(
        "SELECT count(*) AS n, count(DISTINCT anonymous_id) AS v FROM fact_event"
    )
    assert row == {"n": 100_000, "v": 977}


@pytest.mark.parametrize(
    ("table", "rows", "message"),
    [
        ("fact_nothing", [{"x": 1}], "unknown table 'fact_nothing'"),
        ("fact_event", [{"event_id": "e", "ts": NOW, "colour": "red"}], "unknown column.*colour"),
        ("fact_event", [{"ts": NOW}], "key column 'event_id'"),
        ("fact_event", [{"event_id": "e", "ts": "yesterday"}], r"fact_event\.ts"),
        ("fact_event", [{"event_id": "e", "ts": NOW, "revenue": "lots"}], "revenue"),
    ],
)
async def test_bad_rows_are_refused_with_the_reason(
    warehouse: Warehouse, table: str, rows: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(WarehouseError, match=message):
        await warehouse.insert(table, rows)
    assert await warehouse.fetch("SELECT count(*) AS n FROM fact_event") == [{"n": 0}]


async def test_bad_sql_names_the_engine_and_the_cause(warehouse: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="no_such_table") as caught:
        await warehouse.fetch("SELECT * FROM no_such_table")
    assert ("duckdb" if warehouse.engine == "duckdb" else "postgresql at") in str(caught.value)


async def test_closed_warehouse_says_so(open_engine: OpenWarehouse) -> None:
    warehouse = await open_engine()
    await warehouse.close()
    await warehouse.close()  # idempotent
    with pytest.raises(WarehouseError, match="closed"):
        await warehouse.fetch("SELECT 1 AS one")


# --- DuckDB only ---------------------------------------------------------------------------------


async def test_duckdb_downloads_no_extension_to_open_a_file(tmp_path: Path) -> None:
    """A warehouse path holding an SQLite database made DuckDB fetch sqlite_scanner from the
    internet (seconds without it; with it, the SQLite file would have been opened)."""
    path = tmp_path / "w.duckdb"
    path.write_bytes(b"SQLite format 3\x00" + bytes(4080))
    with pytest.raises(WarehouseError, match="sqlite") as caught:
        await DuckDBWarehouse.open(path, readers=1)
    assert "Failed to download" not in str(caught.value)


async def test_duckdb_reads_leave_the_event_loop_free(tmp_path: Path) -> None:
    """A query of a second or so: the loop's longest stall must be a small part of it."""
    warehouse = await DuckDBWarehouse.open(tmp_path / "w.duckdb", readers=2)
    try:
        loop = asyncio.get_running_loop()
        stalls: list[float] = []

        async def tick() -> None:
            while True:
                before = loop.time()
                await asyncio.sleep(0.005)
                stalls.append(loop.time() - before - 0.005)

        ticker = asyncio.create_task(tick())
        started = loop.time()
        await warehouse.fetch(
            "SELECT count(DISTINCT (i * 7919) % 1000003) AS n FROM range(20000000) t(i)"
        )
        took = loop.time() - started
        ticker.cancel()
        assert took > 0.1, "the query was too quick to tell anything"
        assert len(stalls) > 5
        assert max(stalls) / took < 0.25, f"the loop stalled {max(stalls):.3f} s of {took:.3f} s"
    finally:
        await warehouse.close()


async def test_duckdb_file_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); print('held', flush=True);"
        " sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"held\n"
        with pytest.raises(WarehouseError, match="in use by another process"):
            await DuckDBWarehouse.open(path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        await holder.wait()
