"""The SQL connector on the service PostgreSQL and the service MariaDB: each test builds an
"ERP" in a schema (PostgreSQL) or database (MariaDB) of its own, dropped afterwards."""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncmy
import asyncpg
import pytest
import redis.asyncio as aioredis

from gateway.bus import Bus
from gateway.config import BusConfig, ErpConfig, ErpSqlConfig
from gateway.config.values import Secret
from gateway.erp import open_connector, stock
from gateway.erp.base import (
    Customer,
    Entity,
    ErpUnavailable,
    Page,
    Product,
    SaleLine,
    StockLevel,
    Store,
)
from gateway.erp.sql import SqlConnector, bind_cursor, cursor_text, postgres_cursor
from gateway.erp.sync import ErpSync
from gateway.errors import ConfigError
from gateway.keys import EVENTS, Keys
from gateway.warehouse import Warehouse
from tests.gateway.warehouse.conftest import with_search_path

# --- no I/O ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "postgres", "count"),
    [
        ("SELECT 1 WHERE d > :cursor", "SELECT 1 WHERE d > $1", 1),
        ("WHERE a > :cursor OR b >= :cursor", "WHERE a > $1 OR b >= $1", 2),
        ("SELECT d::timestamp AS cursor WHERE d > :cursor::timestamp",
         "SELECT d::timestamp AS cursor WHERE d > $1::timestamp", 1),
        ("SELECT x::cursor, ':cursor' AS s WHERE d > :cursor",
         "SELECT x::cursor, ':cursor' AS s WHERE d > $1", 1),
        ("SELECT 'it''s :cursor' WHERE d > :cursor", "SELECT 'it''s :cursor' WHERE d > $1", 1),
        ('SELECT ":cursor" FROM t -- :cursor\nWHERE d > :cursor /* :cursor */',
         'SELECT ":cursor" FROM t -- :cursor\nWHERE d > $1 /* :cursor */', 1),
        ("SELECT $$ :cursor $$, $a$ :cursor $a$ WHERE d > :cursor",
         "SELECT $$ :cursor $$, $a$ :cursor $a$ WHERE d > $1", 1),
        ("SELECT E'\\' :cursor' WHERE d > :cursor", "SELECT E'\\' :cursor' WHERE d > $1", 1),
        ("SELECT :cursors, :cursor_2 FROM t", "SELECT :cursors, :cursor_2 FROM t", 0),
        ("SELECT * FROM t", "SELECT * FROM t", 0),
    ],
)  # fmt: skip
def test_bind_cursor_postgres(query: str, postgres: str, count: int) -> None:
    assert bind_cursor(query, "postgres") == (postgres, count)


@pytest.mark.parametrize(
    ("query", "mysql", "count"),
    [
        ("SELECT 1 WHERE d > :cursor", "SELECT 1 WHERE d > %s", 1),
        ("WHERE a > :cursor OR b >= :cursor", "WHERE a > %s OR b >= %s", 2),
        ("SELECT 'a%' LIKE n, \"it\\\" :cursor\" WHERE d > :cursor",
         "SELECT 'a%%' LIKE n, \"it\\\" :cursor\" WHERE d > %s", 1),
        ("SELECT `:cursor` FROM t # :cursor\nWHERE d > :cursor",
         "SELECT `:cursor` FROM t # :cursor\nWHERE d > %s", 1),
        ("SELECT 'a%' FROM t", "SELECT 'a%' FROM t", 0),  # no arguments: no formatting
    ],
)  # fmt: skip
def test_bind_cursor_mysql(query: str, mysql: str, count: int) -> None:
    assert bind_cursor(query, "mysql") == (mysql, count)


def test_cursor_values_round_trip() -> None:
    moment = datetime(2026, 3, 1, 10, 0, 0, 500, tzinfo=UTC)
    assert postgres_cursor(cursor_text(moment), "timestamptz") == moment
    assert postgres_cursor(cursor_text(moment.replace(tzinfo=None)), "timestamp") == moment.replace(
        tzinfo=None
    )
    assert postgres_cursor("1970-01-01 00:00:00", "timestamptz") == datetime(1970, 1, 1, tzinfo=UTC)
    assert postgres_cursor(cursor_text(12345678901234), "int8") == 12345678901234
    assert postgres_cursor(cursor_text(Decimal("1.50")), "numeric") == Decimal("1.50")
    with pytest.raises(ValueError):
        postgres_cursor("not a date", "timestamp")


def test_a_dsn_of_another_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"erp\.sql\.dsn: expected postgresql://"):
        SqlConnector(ErpSqlConfig(dsn=Secret("sqlite:///erp.db")))


# --- an ERP database per test -----------------------------------------------------------------


@dataclass
class ErpDatabase:
    """A scratch ERP database: its DSN and a way to run statements in it."""

    kind: str
    dsn: str

    @property
    def timestamp(self) -> str:
        return "TIMESTAMP(6)" if self.kind == "postgres" else "DATETIME(6)"

    async def execute(self, *statements: str) -> None:
        if self.kind == "postgres":
            connection = await asyncpg.connect(self.dsn, timeout=10)
            try:
                for statement in statements:
                    await connection.execute(statement)
            finally:
                await connection.close()
            return
        url = urlsplit(self.dsn)
        db = await asyncmy.connect(
            host=url.hostname, port=url.port or 3306, user=url.username or "",
            password=url.password or "", database=url.path.lstrip("/"), autocommit=True,
        )  # fmt: skip
        try:
            async with db.cursor() as cursor:
                for statement in statements:
                    await cursor.execute(statement)
        finally:
            await db.ensure_closed()

    def connector(self, **settings: Any) -> SqlConnector:
        if self.kind == "mariadb":  # CURSOR is a reserved word there
            settings = {k: v.replace(" AS cursor", " AS `cursor`") if k in QUERIES else v
                        for k, v in settings.items()}  # fmt: skip
        return SqlConnector(ErpSqlConfig(dsn=Secret(self.dsn), **settings), "config.toml")


async def _admin_mariadb(url: str, statement: str) -> None:
    parts = urlsplit(url)
    db = await asyncmy.connect(
        host=parts.hostname, port=parts.port or 3306, user=parts.username or "",
        password=parts.password or "", autocommit=True,
    )  # fmt: skip
    try:
        async with db.cursor() as cursor:
            await cursor.execute(statement)
    finally:
        await db.ensure_closed()


async def _admin_postgres(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def scratch(kind: str, url: str) -> AsyncIterator[ErpDatabase]:
    """A schema (PostgreSQL) or database (MariaDB) ``test_erp_<random>``, dropped after."""
    name = f"test_erp_{secrets.token_hex(6)}"
    if kind == "postgres":
        await _admin_postgres(url, f'CREATE SCHEMA "{name}"')
        try:
            yield ErpDatabase("postgres", with_search_path(url, name))
        finally:
            await _admin_postgres(url, f'DROP SCHEMA "{name}" CASCADE')
    else:
        await _admin_mariadb(url, f"CREATE DATABASE `{name}`")
        try:
            yield ErpDatabase("mariadb", urlunsplit(urlsplit(url)._replace(path=f"/{name}")))
        finally:
            await _admin_mariadb(url, f"DROP DATABASE `{name}`")


@pytest.fixture(params=["postgres", "mariadb"])
async def erp(request: pytest.FixtureRequest) -> AsyncIterator[ErpDatabase]:
    """An ERP database on PostgreSQL, then on MariaDB."""
    url = request.getfixturevalue(f"{request.param}_url")
    async with scratch(request.param, url) as database:
        yield database


@pytest.fixture
async def pg_erp(postgres_url: str) -> AsyncIterator[ErpDatabase]:
    async with scratch("postgres", postgres_url) as database:
        yield database


QUERIES = {
    "products": "SELECT code AS sku, name, list_price AS price, currency, category, cost, "
    "write_date AS cursor FROM product WHERE write_date > :cursor",
    "stock": "SELECT code AS sku, warehouse AS location, qty AS quantity, write_date AS cursor "
    "FROM stock_move_total WHERE write_date > :cursor",
    "stores": "SELECT code AS store_id, name, city, tz AS timezone, NULL AS cursor FROM shop",
    "customers": "SELECT CAST(id AS CHAR(10)) AS party_id, email, phone, name, "
    "write_date AS cursor FROM party WHERE write_date > :cursor",
    "sales": "SELECT number AS order_id, sku, quantity, unit_price, currency, sale_date AS "
    "ordered_at, CAST(party AS CHAR(10)) AS party_id, shop AS store_id, state, "
    "write_date AS cursor FROM sale_line WHERE write_date > :cursor",
}


async def catalogue(erp: ErpDatabase) -> None:
    """Two products, three stock levels, a shop, a party, an order of two lines."""
    ts = erp.timestamp
    await erp.execute(
        f"""CREATE TABLE product (code VARCHAR(40) PRIMARY KEY, name VARCHAR(200),
            list_price DECIMAL(12, 2), currency VARCHAR(3), category VARCHAR(40),
            cost DECIMAL(12, 2), write_date {ts} NOT NULL)""",
        f"""CREATE TABLE stock_move_total (code VARCHAR(40), warehouse VARCHAR(40),
            qty DECIMAL(12, 3), write_date {ts} NOT NULL, PRIMARY KEY (code, warehouse))""",
        "CREATE TABLE shop (code VARCHAR(20), name VARCHAR(80), city VARCHAR(80), tz VARCHAR(40))",
        f"""CREATE TABLE party (id INTEGER PRIMARY KEY, email VARCHAR(200), phone VARCHAR(40),
            name VARCHAR(200), write_date {ts} NOT NULL)""",
        f"""CREATE TABLE sale_line (number VARCHAR(20), sku VARCHAR(40), quantity DECIMAL(12, 3),
            unit_price DECIMAL(12, 2), currency VARCHAR(3), sale_date {ts}, party INTEGER,
            shop VARCHAR(20), state VARCHAR(20), write_date {ts} NOT NULL)""",
        """INSERT INTO product VALUES
            ('SKU-1', 'Oak chair', 89.90, 'EUR', 'furniture', 41.50, '2026-03-01 10:00:00'),
            ('SKU-2', 'Lamp', 19.00, 'EUR', NULL, NULL, '2026-03-01 11:30:00.250000')""",
        """INSERT INTO stock_move_total VALUES ('SKU-1', 'store-1', 3, '2026-03-01 10:00:00'),
            ('SKU-1', 'web', 0, '2026-03-01 10:00:00'),
            ('SKU-2', 'web', 12.5, '2026-03-02 09:00:00')""",
        "INSERT INTO shop VALUES ('store-1', 'Lyon Part-Dieu', 'Lyon', 'Europe/Paris')",
        """INSERT INTO party VALUES (7, 'ada@example.com', '+33600000000', 'Ada',
            '2026-02-01 08:00:00')""",
        """INSERT INTO sale_line VALUES
            ('SO-1', 'SKU-1', 2, 89.90, 'EUR', '2026-03-03 15:04:05', 7, 'store-1', 'done',
             '2026-03-03 15:05:00'),
            ('SO-1', 'SKU-2', 1, 19.00, 'EUR', '2026-03-03 15:04:05', 7, 'store-1', 'cancelled',
             '2026-03-03 15:05:00')""",
    )  # fmt: skip


async def test_an_active_column_marks_discontinued_products(erp: ErpDatabase) -> None:
    await catalogue(erp)
    await erp.execute(
        "ALTER TABLE product ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE",
        "UPDATE product SET active = FALSE WHERE code = 'SKU-2'",
    )
    query = QUERIES["products"].replace(", cost, ", ", cost, active, ")
    products = rows_of(
        await read_all(erp.connector(**{**QUERIES, "products": query}), "products", None)
    )
    assert sorted((p.sku, p.active) for p in products) == [("SKU-1", True), ("SKU-2", False)]


async def read_all(connector: SqlConnector, entity: Entity, cursor: str | None) -> list[Page[Any]]:
    return [page async for page in connector.read(entity, cursor)]


def rows_of(pages: list[Page[Any]]) -> list[Any]:
    return [row for page in pages for row in page.rows]


async def test_every_entity_is_read_whole_with_typed_values(erp: ErpDatabase) -> None:
    await catalogue(erp)
    connector = erp.connector(**QUERIES)
    products = await read_all(connector, "products", None)
    assert sorted(rows_of(products), key=lambda p: p.sku) == [
        Product("SKU-1", "Oak chair", 89.9, "EUR", "furniture", 41.5),
        Product("SKU-2", "Lamp", 19.0, "EUR"),
    ]
    assert isinstance(rows_of(products)[0].price, float)
    assert products[-1].cursor == "2026-03-01 11:30:00.250000"

    stock = await read_all(connector, "stock", None)
    assert sorted(rows_of(stock), key=lambda s: (s.sku, s.location)) == [
        StockLevel("SKU-1", "store-1", 3.0),
        StockLevel("SKU-1", "web", 0.0),
        StockLevel("SKU-2", "web", 12.5),
    ]
    assert stock[-1].cursor == "2026-03-02 09:00:00"

    stores = await read_all(connector, "stores", None)
    assert rows_of(stores) == [Store("store-1", "Lyon Part-Dieu", "Lyon", "Europe/Paris")]
    assert stores[-1].cursor is None  # no change date: read whole every time

    customers = await read_all(connector, "customers", None)
    assert rows_of(customers) == [Customer("7", "ada@example.com", "+33600000000", "Ada")]

    sales = await read_all(connector, "sales", "2026-03-01 00:00:00")
    assert sorted(rows_of(sales), key=lambda s: s.sku) == [
        SaleLine("SO-1", "SKU-1", 2.0, 89.9, "EUR", datetime(2026, 3, 3, 15, 4, 5), "7",
                 "store-1", "done"),
        SaleLine("SO-1", "SKU-2", 1.0, 19.0, "EUR", datetime(2026, 3, 3, 15, 4, 5), "7",
                 "store-1", "cancelled"),
    ]  # fmt: skip
    assert sales[-1].cursor == "2026-03-03 15:05:00"
    await connector.close()


async def test_an_entity_without_query_is_one_empty_page(erp: ErpDatabase) -> None:
    connector = erp.connector()
    pages = await read_all(connector, "sales", "2026-01-01 00:00:00")
    assert [(p.rows, p.cursor, p.skipped) for p in pages] == [([], "2026-01-01 00:00:00", 0)]


async def test_an_incremental_read_returns_only_the_rows_changed(erp: ErpDatabase) -> None:
    await catalogue(erp)
    connector = erp.connector(**QUERIES)
    cursor = (await read_all(connector, "stock", None))[-1].cursor
    nothing = await read_all(connector, "stock", cursor)
    assert [(p.rows, p.cursor) for p in nothing] == [([], cursor)]

    await erp.execute(
        "UPDATE stock_move_total SET qty = 2, write_date = '2026-03-05 12:00:00' "
        "WHERE code = 'SKU-1' AND warehouse = 'store-1'",
        "UPDATE product SET list_price = 79.90, write_date = '2026-03-05 12:00:01' "
        "WHERE code = 'SKU-1'",
    )  # fmt: skip
    changed = await read_all(connector, "stock", cursor)
    assert rows_of(changed) == [StockLevel("SKU-1", "store-1", 2.0)]
    assert changed[-1].cursor == "2026-03-05 12:00:00"
    products = await read_all(connector, "products", "2026-03-01 11:30:00.250000")
    assert [(p.sku, p.price) for p in rows_of(products)] == [("SKU-1", 79.9)]


async def test_rows_sharing_a_cursor_across_pages_are_never_lost(erp: ErpDatabase) -> None:
    """Page size 3, a run of 7 rows with one write date: whether the read finishes or stops
    after any page, every row is loaded before its cursor is passed."""
    ts = erp.timestamp
    values = ", ".join(
        f"('SKU-{n:02}', 'w', {n}, '2026-03-0{1 if n < 4 else 2} 00:00:00')" for n in range(11)
    )
    await erp.execute(
        f"CREATE TABLE stock_move_total (code VARCHAR(40), warehouse VARCHAR(40), "
        f"qty DECIMAL(12, 3), write_date {ts} NOT NULL)",
        f"INSERT INTO stock_move_total VALUES {values}",
    )
    connector = erp.connector(stock=QUERIES["stock"], page_size=3)
    every = {f"SKU-{n:02}" for n in range(11)}

    pages = await read_all(connector, "stock", None)
    assert [len(p.rows) for p in pages] == [3, 3, 3, 2]
    assert {r.sku for r in rows_of(pages)} == every
    assert [p.cursor for p in pages] == [None, None, None, "2026-03-02 00:00:00"]

    # Stopped after each page in turn (a crash, the warehouse gone): the rows loaded so far
    # and a read from the cursor kept hold every row.
    for stop in range(1, len(pages)):
        loaded: set[str] = set()
        kept: str | None = None
        reader = cast(AsyncGenerator[Page[Any], None], connector.read("stock", None))
        for _ in range(stop):
            page = await anext(reader)
            loaded |= {r.sku for r in page.rows}
            kept = page.cursor or kept
        await reader.aclose()
        loaded |= {r.sku for r in rows_of(await read_all(connector, "stock", kept))}
        assert loaded == every, f"stopped after page {stop}"

    # Seven rows changed in one transaction: one write date, more than two pages of it.
    await erp.execute(
        "UPDATE stock_move_total SET qty = qty + 100, write_date = '2026-03-09 00:00:00' "
        "WHERE code >= 'SKU-04'"
    )
    changed = await read_all(connector, "stock", pages[-1].cursor)
    assert {r.sku for r in rows_of(changed)} == {f"SKU-{n:02}" for n in range(4, 11)}
    assert {r.quantity for r in rows_of(changed)} == {float(n + 100) for n in range(4, 11)}
    assert [p.cursor for p in changed] == [pages[-1].cursor] * 2 + ["2026-03-09 00:00:00"]


async def test_a_full_last_page_is_followed_by_an_empty_one_with_the_cursor(
    erp: ErpDatabase,
) -> None:
    await catalogue(erp)
    connector = erp.connector(stock=QUERIES["stock"], page_size=3)
    pages = await read_all(connector, "stock", None)
    assert [(len(p.rows), p.cursor) for p in pages] == [(3, None), (0, "2026-03-02 09:00:00")]


async def test_malformed_rows_are_skipped_counted_and_logged(
    erp: ErpDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    await catalogue(erp)
    await erp.execute(
        "INSERT INTO product VALUES ('SKU-3', NULL, 5, 'EUR', NULL, NULL, '2026-03-04 00:00:00'),"
        " ('SKU-4', 'Rug', NULL, 'EUR', NULL, NULL, '2026-03-04 00:00:00'),"
        " ('SKU-5', 'Mat', 7, 'EUR', NULL, NULL, '2026-03-04 00:00:00')",
        "INSERT INTO sale_line VALUES ('SO-2', 'SKU-1', 1, 89.90, 'EUR', NULL, NULL, NULL, "
        "'done', '2026-03-04 00:00:00'), ('SO-3', 'SKU-1', 1, 89.90, 'EUR', "
        "'2026-03-04 00:00:00', NULL, NULL, 'refunded', '2026-03-04 00:00:00')",
    )
    connector = erp.connector(**QUERIES)
    with caplog.at_level(logging.WARNING, logger="gateway.erp.base"):
        products = await read_all(connector, "products", None)
        sales = await read_all(connector, "sales", "2026-03-03 20:00:00")
    assert sorted(p.sku for p in rows_of(products)) == ["SKU-1", "SKU-2", "SKU-5"]
    assert sum(p.skipped for p in products) == 2
    assert products[-1].cursor == "2026-03-04 00:00:00"  # skipped rows are passed too
    assert rows_of(sales) == [] and sum(p.skipped for p in sales) == 2
    logged = caplog.text
    for ident in ("SKU-3", "SKU-4", "SO-2", "SO-3"):
        assert ident in logged
    assert "erp.sql.products" in logged and "erp.sql.sales" in logged


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_database_is_unavailable(erp: ErpDatabase) -> None:
    scheme = "postgresql" if erp.kind == "postgres" else "mysql"
    port = closed_port()
    down = SqlConnector(
        ErpSqlConfig(dsn=Secret(f"{scheme}://reader:s3cret@127.0.0.1:{port}/erp"),
                     products=QUERIES["products"]),
    )  # fmt: skip
    with pytest.raises(ErpUnavailable, match=f"127.0.0.1:{port}/erp: cannot connect") as caught:
        await read_all(down, "products", None)
    assert "s3cret" not in str(caught.value)

    # A database that does not exist (the server answers): unavailable too, and says so.
    parts = urlsplit(erp.dsn)
    missing = urlunsplit(parts._replace(path="/no_such_erp_db", query=""))
    gone = SqlConnector(ErpSqlConfig(dsn=Secret(missing), products=QUERIES["products"]))
    with pytest.raises(ErpUnavailable, match="no_such_erp_db: cannot connect") as caught:
        await read_all(gone, "products", None)
    assert ("does not exist" if erp.kind == "postgres" else "Unknown database") in str(caught.value)


async def test_a_query_slower_than_the_timeout_is_unavailable(erp: ErpDatabase) -> None:
    sleep = "pg_sleep(5)" if erp.kind == "postgres" else "SLEEP(5)"
    query = f"SELECT 'a' AS sku, 'b' AS location, 1 AS quantity, {sleep} AS cursor"
    connector = erp.connector(stock=query, timeout=0.3)
    with pytest.raises(ErpUnavailable, match=r"erp\.sql\.stock: no answer in 0\.3 s"):
        await read_all(connector, "stock", None)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELEC code AS sku FROM product", "the query failed on erp database"),
        ("SELECT code AS sku, name, write_date AS cursor FROM no_such_table", "no_such_table"),
        ("SELECT code AS sku, nme, write_date AS cursor FROM product", "nme"),
        ("SELECT code AS id, name, list_price AS price, currency, write_date AS cursor "
         "FROM product WHERE write_date > :cursor", "returns no sku column"),
        ("SELECT code AS sku, name, list_price AS price, currency FROM product",
         "returns no cursor column"),
    ],
)  # fmt: skip
async def test_a_broken_query_names_its_setting(erp: ErpDatabase, query: str, reason: str) -> None:
    await catalogue(erp)
    connector = erp.connector(products=query)
    with pytest.raises(ConfigError, match=r"^config\.toml: erp\.sql\.products: ") as caught:
        await read_all(connector, "products", None)
    assert reason in str(caught.value)


async def test_a_bad_initial_cursor_names_its_setting(pg_erp: ErpDatabase) -> None:
    """(MySQL takes any text for a cursor and compares it as it can.)"""
    await catalogue(pg_erp)
    connector = pg_erp.connector(products=QUERIES["products"], initial_cursor="yesterday-ish")
    with pytest.raises(ConfigError, match=r"erp\.sql\.initial_cursor: cursor 'yesterday-ish'"):
        await read_all(connector, "products", None)


async def test_postgres_typed_cursors_and_casts(pg_erp: ErpDatabase) -> None:
    """A timestamptz cursor keeps its offset; an integer cursor (a version) stays exact."""
    erp = pg_erp
    await erp.execute(
        "CREATE TABLE item (code text, qty numeric, changed timestamptz, version bigint)",
        "INSERT INTO item VALUES ('A', 1, '2026-03-01 10:00:00+02', 9007199254740993),"
        " ('B', 2, '2026-03-01 09:00:00.5+00', 9007199254740995)",
    )
    by_time = erp.connector(
        stock="SELECT code::text AS sku, 'web'::varchar AS location, qty::float8 AS quantity, "
        "changed AS cursor FROM item WHERE changed > :cursor::timestamptz",
    )
    pages = await read_all(by_time, "stock", None)
    assert pages[-1].cursor == "2026-03-01 09:00:00.500000+00:00"
    assert [r.sku for r in rows_of(await read_all(by_time, "stock", pages[-1].cursor))] == []
    by_version = erp.connector(
        stock="SELECT code AS sku, 'web' AS location, qty AS quantity, version AS cursor "
        "FROM item WHERE version > :cursor",
        initial_cursor="0",
    )
    pages = await read_all(by_version, "stock", None)
    assert pages[-1].cursor == "9007199254740995"
    later = await read_all(by_version, "stock", "9007199254740993")
    assert [r.sku for r in rows_of(later)] == ["B"]


async def test_mysql_percent_signs_and_repeated_cursor(erp: ErpDatabase) -> None:
    await catalogue(erp)
    query = (
        "SELECT code AS sku, name, list_price AS price, currency, write_date AS cursor "
        "FROM product WHERE name LIKE '%a%' AND (write_date > :cursor OR write_date = :cursor)"
    )
    connector = erp.connector(products=query)
    pages = await read_all(connector, "products", "2026-03-01 10:00:00")
    assert {r.sku for r in rows_of(pages)} == {"SKU-1", "SKU-2"}


async def test_close_ends_a_read_left_half_way(erp: ErpDatabase) -> None:
    """The connection of a suspended read is dropped: the rest of the read fails (what was
    already received may still come), it never ends as if complete."""
    rows = (
        "generate_series(1, 100000) AS n" if erp.kind == "postgres"
        else "(SELECT seq AS n FROM seq_1_to_100000) AS s"
    )  # fmt: skip
    query = f"SELECT 'SKU' AS sku, 'web' AS location, n AS quantity, n AS cursor FROM {rows}"
    connector = erp.connector(stock=query, page_size=100)
    reader = connector.read("stock", None)
    first = await anext(reader)
    assert len(first.rows) == 100
    await connector.close()
    with pytest.raises(ErpUnavailable, match=r"(?i)lost connection|closed"):
        async for page in reader:
            assert page.cursor is None  # no page says the read is done


def test_open_connector_gives_the_sql_connector(make_config: Any) -> None:
    section = '[erp]\nconnector = "sql"\n[erp.sql]\nstock = "SELECT 1"'
    config = make_config("", "tp", section, erp__sql__dsn="mysql://reader@erp.internal/erp")
    connector = open_connector(config)
    assert isinstance(connector, SqlConnector)
    assert connector.target.where == "erp database mysql://erp.internal:3306/erp"
    assert list(connector.queries) == ["stock"]


SALES = """INSERT INTO sale_line VALUES
    ('SO-10', 'SKU-1', 1, 89.90, 'EUR', '2026-03-06 10:00:00', 7, 'store-1', 'done', '{when}'),
    ('SO-11', 'SKU-2', 2, 19.00, 'EUR', '2026-03-06 11:00:00', NULL, NULL, 'done', '{when}'),
    ('SO-10', 'SKU-2', 1, 19.00, 'EUR', '2026-03-06 10:00:00', 7, 'store-1', 'done', '{when}'),
    ('SO-12', 'SKU-1', 1, 89.90, 'EUR', '2026-03-06 12:00:00', NULL, NULL, 'done', '{when}'),
    ('SO-10', 'SKU-1', 3, 80.00, 'EUR', '2026-03-06 10:00:00', 7, 'store-1', 'done', '{when}'),
    ('SO-12', 'SKU-2', 1, 19.00, 'EUR', '2026-03-06 12:00:00', NULL, NULL, 'done', '{when}')"""


async def test_a_page_never_ends_in_the_middle_of_an_order(erp: ErpDatabase) -> None:
    await catalogue(erp)
    await erp.execute(SALES.format(when="2026-03-06 13:00:00"))
    connector = erp.connector(sales=QUERIES["sales"], page_size=2)
    pages = await read_all(connector, "sales", "2026-03-05 00:00:00")
    orders = [sorted({line.order_id for line in page.rows}) for page in pages]
    assert orders == [["SO-10"], ["SO-11"], ["SO-12"]]
    assert [len(page.rows) for page in pages] == [3, 1, 2]
    assert [page.cursor for page in pages] == ["2026-03-05 00:00:00"] * 2 + ["2026-03-06 13:00:00"]


async def test_a_sync_through_the_sql_connector(
    erp: ErpDatabase, warehouse: Warehouse, redis_client: aioredis.Redis, prefix: str
) -> None:
    """Stores, products, stock and sales from the ERP database into the warehouse, the stock
    cache and the bus, two rows a page; then one stock level changes and only it is read."""
    await catalogue(erp)
    await erp.execute("DELETE FROM sale_line", SALES.format(when="2026-03-06 13:00:00"))
    keys = Keys(prefix)
    bus = Bus(redis_client, keys, BusConfig())
    connector = erp.connector(**QUERIES, page_size=2)
    syncer = ErpSync(connector, warehouse, redis_client, keys, bus, ErpConfig())

    results = {e: await syncer.sync(e) for e in ("stores", "products", "stock", "sales")}
    assert {e: (r.rows, r.skipped, r.error) for e, r in results.items()} == {
        "stores": (1, 0, None),
        "products": (2, 0, None),
        "stock": (3, 0, None),
        "sales": (6, 0, None),
    }
    products = await warehouse.fetch("SELECT sku, price, cost FROM dim_product ORDER BY sku")
    assert products == [
        {"sku": "SKU-1", "price": 89.9, "cost": 41.5},
        {"sku": "SKU-2", "price": 19.0, "cost": None},
    ]
    assert await stock.stock_levels(redis_client, keys, "SKU-1") == {"store-1": 3.0, "web": 0.0}
    assert await stock.cursor(redis_client, keys, "stock", "SqlConnector") == "2026-03-02 09:00:00"
    assert await stock.cursor(redis_client, keys, "stores", "SqlConnector") is None
    published = [e for entry in await bus.latest(EVENTS, 100) for e in entry.events]
    orders = {e.properties["order_id"]: e for e in published if e.name == "Order Completed"}
    assert {o: len(e.properties["products"]) for o, e in orders.items()} == {
        "SO-10": 3,
        "SO-11": 1,
        "SO-12": 2,
    }
    assert orders["SO-10"].properties["total"] == pytest.approx(89.9 + 19.0 + 240.0)
    assert not [e for e in published if e.name == "Stock Changed"]  # the first sync: a baseline

    await erp.execute(
        "UPDATE stock_move_total SET qty = 2, write_date = '2026-03-07 08:00:00' "
        "WHERE code = 'SKU-1' AND warehouse = 'store-1'"
    )
    again = await syncer.sync("stock")
    assert (again.rows, again.changed, again.error) == (1, 1, None)
    assert await stock.stock_levels(redis_client, keys, "SKU-1") == {"store-1": 2.0, "web": 0.0}
    levels = await warehouse.fetch(
        "SELECT quantity FROM product_stock WHERE sku = 'SKU-1' AND location = 'store-1'"
    )
    assert levels == [{"quantity": 2.0}]
    changed = [
        e.properties
        for entry in await bus.latest(EVENTS, 100)
        for e in entry.events
        if e.name == "Stock Changed"
    ]
    assert changed == [{"sku": "SKU-1", "location": "store-1", "old": 3.0, "new": 2.0}]
    assert (await syncer.sync("sales")).changed == 0  # nothing new, nothing twice

    # The ERP goes away: the sync says so, the last known stock stays, marked stale.
    syncer.connector = SqlConnector(
        ErpSqlConfig(dsn=Secret(f"postgresql://127.0.0.1:{closed_port()}/erp"), stock="SELECT 1")
    )
    failed = await syncer.sync("stock")
    assert failed.error is not None and "ErpUnavailable" in failed.error
    assert await stock.is_stale(redis_client, keys)
    assert await stock.stock_levels(redis_client, keys, "SKU-1") == {"store-1": 2.0, "web": 0.0}
