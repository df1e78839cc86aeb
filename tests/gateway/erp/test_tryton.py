"""The Tryton connector against a real Tryton 8.2 (``tryton_server.py``): what a full read
gives over JSON-RPC and REST, paging, increments (a stock move, a template price, a new
party, a changed email), sessions that expire, a refused login, a server that goes away; then
whole syncs into both warehouse engines and Redis: a change in Tryton reaches the gateway on
the next poll, Tryton stopped mid-sync leaves the stock stale until it is back, and a party
joins the web visitor with its e-mail, its order in ``fact_sale``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.agents import AGENTS, AgentContext
from gateway.bus import Bus
from gateway.config import BusConfig, Config, ErpConfig, ErpTrytonConfig
from gateway.config.values import Secret
from gateway.datamart.profiles import find_customer, get_profile
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
from gateway.erp.sync import ErpSync
from gateway.erp.tryton import TrytonConnector, decode, key, parse_cursor, sale_values, typed, undot
from gateway.events import Event
from gateway.keys import EVENTS, Keys
from gateway.warehouse import Warehouse
from tests.gateway.agents.chain import BUS, COLLECTOR, Chain, ev
from tests.gateway.erp import tryton_server as server
from tests.gateway.erp.tryton_server import TrytonServer

# The fixtures, found by pytest as this module's attributes.
tryton_server, tryton = server.tryton_server, server.tryton

# The first test of a machine installs Tryton and builds its database (about 45 s, more on a
# busy machine); the others take a second or two.
pytestmark = pytest.mark.timeout(300)


def settings(tryton: TrytonServer, mode: str = "rpc", **values: Any) -> ErpTrytonConfig:
    given: dict[str, Any] = {
        "url": tryton.url,
        "database": tryton.database,
        "user": tryton.user,
        "password": Secret(tryton.password),
        "api_key": Secret(tryton.rest_key if mode == "rest" else None),
    }
    return ErpTrytonConfig(**{**given, **values})


@pytest.fixture
async def connect(tryton: TrytonServer) -> AsyncIterator[Callable[..., TrytonConnector]]:
    """``connect(mode, **settings)`` → a connector to the test's Tryton, closed afterwards."""
    opened: list[TrytonConnector] = []

    def make(mode: str = "rpc", **values: Any) -> TrytonConnector:
        opened.append(TrytonConnector(settings(tryton, mode, **values)))
        return opened[-1]

    yield make
    for connector in opened:
        await connector.close()


async def pages(
    connector: TrytonConnector, entity: Entity, cursor: str | None = None, confirm: bool = True
) -> list[Page[Any]]:
    """Every page of one read, confirmed as a sync would once each is loaded."""
    found = []
    async for page in connector.read(entity, cursor):
        found.append(page)
        if confirm:
            await connector.confirm(entity, page)
    return found


async def rows(
    connector: TrytonConnector, entity: Entity, cursor: str | None = None, confirm: bool = True
) -> tuple[list[Any], str | None]:
    """The rows of one read and the cursor it ends on."""
    read = await pages(connector, entity, cursor, confirm)
    return [row for page in read for row in page.rows], read[-1].cursor


def by_sku(levels: list[StockLevel]) -> dict[tuple[str, str], float]:
    return {(level.sku, level.location): level.quantity for level in levels}


def test_typed_values_both_ways() -> None:
    moment = datetime(2026, 11, 29, 9, 19, 24, 224866, tzinfo=UTC)
    assert json.loads(json.dumps(typed(moment)), object_hook=decode) == moment
    body = '{"p": {"__class__": "Decimal", "decimal": "11.01"}, "d": {"__class__": "date", '
    body += '"year": 2025, "month": 3, "day": 12}}'
    assert json.loads(body, object_hook=decode) == {"p": Decimal("11.01"), "d": date(2025, 3, 12)}
    assert parse_cursor("2026-11-29T09:19:24") == datetime(2026, 11, 29, 9, 19, 24, tzinfo=UTC)
    assert parse_cursor(None) is None


def test_records_are_keyed_by_their_latest_date_nested_ones_included() -> None:
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    rpc = {"id": 7, "write_date": None, "create_date": early, "template.": {"write_date": late}}
    assert undot(rpc) == {"id": 7, "write_date": None, "create_date": early,
                          "template": {"write_date": late}}  # fmt: skip
    assert key(rpc) == (7, "2026-02-01T00:00:00.000000+00:00")
    assert key({"id": 8}) == (8, "")


def test_a_sale_without_a_sale_date_is_dated_by_its_creation() -> None:
    created = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    sale = {"number": "9", "state": "processing", "sale_date": None, "create_date": created,
            "currency": {"code": "EUR"}, "party": None, "warehouse": {"code": "WH"}}  # fmt: skip
    line = {"product": {"code": "SKU-1"}, "quantity": 2.0, "unit_price": Decimal("1.50")}
    assert sale_values(sale, line) == {
        "order_id": "9", "sku": "SKU-1", "quantity": 2.0, "unit_price": 1.5, "currency": "EUR",
        "ordered_at": created, "party_id": None, "store_id": "WH", "state": "done",
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["rpc", "rest"])
async def test_a_full_read_gives_the_populated_data(
    connect: Callable[..., TrytonConnector], mode: str
) -> None:
    connector = connect(mode)

    stores, cursor = await rows(connector, "stores")
    assert stores == [Store("WH", "Warehouse"), Store("WH2", "Second Warehouse")]
    assert cursor is not None

    products, _ = await rows(connector, "products")
    assert len(products) == 50
    assert products[0] == Product("SKU-001", "Product 001", 11.01, "USD", "Bags", 6.0, erp_id="1")
    assert products[49] == Product(
        "SKU-050", "Product 050", 60.5, "USD", "Accessories", 55.0, erp_id="50"
    )

    levels = by_sku((await rows(connector, "stock"))[0])
    assert len(levels) == 100  # every product in each warehouse, one request per warehouse
    assert levels[("SKU-001", "WH")] == 7  # 10 in, 3 out (the draft +100 counts for nothing)
    assert levels[("SKU-001", "WH2")] == 1  # not 8: the warehouses are not summed
    assert levels[("SKU-044", "WH")] == 440
    assert levels[("SKU-044", "WH2")] == 0
    assert levels[("SKU-046", "WH")] == 0  # in and out again
    assert levels[("SKU-050", "WH")] == 0  # never moved

    customers, _ = await rows(connector, "customers")
    assert len(customers) == 20  # the company's own party is no customer
    assert customers[0] == Customer("CUST-001", "customer001@example.com", "+15550000001",
                                    "Customer 001")  # fmt: skip
    assert customers[19] == Customer("CUST-020", None, "+15550000020", "Customer 020")

    sales, _ = await rows(connector, "sales")
    orders = {line.order_id: line.state for line in sales}
    # Draft and quotation are not sales yet; confirmed, processing and done count.
    assert orders == {"2": "done", "3": "done", "4": "done", "5": "done", "6": "done",
                      "7": "cancelled"}  # fmt: skip
    assert len(sales) == 12
    assert sales[0] == SaleLine(
        order_id="2",
        sku="SKU-005",
        quantity=1.0,
        unit_price=15.05,
        currency="USD",
        ordered_at=datetime(2025, 3, 12, tzinfo=UTC),
        party_id="CUST-003",
        store_id="WH",
    )
    assert (sales[3].sku, sales[3].quantity, sales[3].store_id) == ("SKU-008", 2.0, "WH2")


async def test_pages_follow_page_size_and_only_the_last_moves_the_cursor(
    connect: Callable[..., TrytonConnector],
) -> None:
    connector = connect(page_size=7)
    read = await pages(connector, "products")
    assert [len(page.rows) for page in read] == [7] * 7 + [1]
    assert [page.cursor for page in read[:-1]] == [None] * 7
    assert read[-1].cursor is not None
    assert len({row.sku for page in read for row in page.rows}) == 50

    levels = await pages(connector, "stock")
    assert sum(len(page.rows) for page in levels) == 100
    assert max(len(page.rows) for page in levels) <= 7


async def test_only_warehouses_named_are_read(connect: Callable[..., TrytonConnector]) -> None:
    connector = connect(warehouses=("WH2",))
    assert (await rows(connector, "stores"))[0] == [Store("WH2", "Second Warehouse")]
    levels = by_sku((await rows(connector, "stock"))[0])
    assert {location for _, location in levels} == {"WH2"}
    assert levels[("SKU-015", "WH2")] == 15


async def test_increments_carry_what_changed_in_tryton(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector]
) -> None:
    connector = connect()
    cursors = {}
    for entity in ("products", "stock", "customers", "sales"):
        _, cursors[entity] = await rows(connector, entity)
        # Nothing changed: the overlap re-reads the last minute, what was loaded is dropped.
        assert await rows(connector, entity, cursors[entity]) == ([], cursors[entity])

    tryton.stock_move("SKU-049", 4, warehouse="WH2")
    tryton.stock_move("SKU-001", -2, warehouse="WH")
    tryton.set_list_price("SKU-002", "99.99")
    tryton.create_party("CUST-100", "New Customer", email="new@example.com", phone="+15559990000")
    tryton.set_email("CUST-005", "changed005@example.com")

    stock, stock_cursor = await rows(connector, "stock", cursors["stock"])
    assert by_sku(stock) == {
        ("SKU-001", "WH"): 5,
        ("SKU-001", "WH2"): 1,
        ("SKU-049", "WH"): 0,
        ("SKU-049", "WH2"): 4,
    }
    assert stock_cursor is not None and stock_cursor > cursors["stock"]

    products, _ = await rows(connector, "products", cursors["products"])
    assert [(p.sku, p.price) for p in products] == [("SKU-002", 99.99)]

    customers, _ = await rows(connector, "customers", cursors["customers"])
    assert sorted((c.party_id, c.email) for c in customers) == [
        ("CUST-005", "changed005@example.com"),  # a contact mechanism written, not the party
        ("CUST-100", "new@example.com"),
    ]
    assert await rows(connector, "sales", cursors["sales"]) == ([], cursors["sales"])

    # Read again from the same cursors: what was confirmed is not given twice.
    assert (await rows(connector, "stock", cursors["stock"]))[0] == []
    assert (await rows(connector, "customers", cursors["customers"]))[0] == []


async def test_deactivated_products_come_as_discontinued(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector]
) -> None:
    connector = connect()
    _, cursor = await rows(connector, "products")
    tryton.run(
        """
Template = pool.get("product.template")
Template.write(Template.search([("code", "=", "SKU-004")]), {"active": False})
Product = pool.get("product.product")
Product.write(Product.search([("code", "=", "SKU-005")]), {"active": False})
"""
    )
    changed, _ = await rows(connector, "products", cursor)
    assert sorted((p.sku, p.active) for p in changed) == [("SKU-004", False), ("SKU-005", False)]
    everything, _ = await rows(connect(), "products")  # a full read has them too
    assert len(everything) == 50
    assert {p.sku for p in everything if not p.active} == {"SKU-004", "SKU-005"}


async def test_a_renamed_category_reaches_its_products(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector]
) -> None:
    connector = connect(overlap=0.0)  # only what a date says changed, nothing re-read
    everything, cursor = await rows(connector, "products")
    bags = sorted(p.sku for p in everything if p.category == "Bags")
    tryton.set_list_price("SKU-003", "50")  # the cursor moves past every Bags product's dates
    _, cursor = await rows(connector, "products", cursor)
    # Renamed through the server, as its users do: a name is translatable, and the server
    # would keep its cached one for minutes after a write from another process.
    rpc: Any = connector.transport
    (bag,) = await rpc.search_read("product.category", [["name", "=", "Bags"]], ["id"], {}, 1)
    await rpc.call("model.product.category.write", [[bag["id"]], {"name": "Bags & Packs"}, {}])
    changed, _ = await rows(connector, "products", cursor)
    assert sorted(p.sku for p in changed) == bags
    assert {p.category for p in changed} == {"Bags & Packs"}


async def test_a_page_never_confirmed_is_read_again(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector]
) -> None:
    connector = connect()
    _, cursor = await rows(connector, "stock")
    tryton.stock_move("SKU-050", 6)
    first, _ = await rows(connector, "stock", cursor, confirm=False)  # the load failed
    again, _ = await rows(connector, "stock", cursor)
    assert by_sku(first) == by_sku(again) == {("SKU-050", "WH"): 6, ("SKU-050", "WH2"): 0}


async def test_a_malformed_record_is_skipped_and_counted(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector]
) -> None:
    tryton.run(
        """
Template = pool.get("product.template")
Template.write(Template.search([("code", "=", "SKU-003")]), {"list_price": None})
"""
    )
    read = await pages(connect(), "products")
    assert sum(page.skipped for page in read) == 1
    assert "SKU-003" not in {p.sku for page in read for p in page.rows}
    assert sum(len(page.rows) for page in read) == 49


async def test_an_expired_session_is_opened_again(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector]
) -> None:
    connector = connect()
    assert len((await rows(connector, "stores"))[0]) == 2
    tryton.run('Session = pool.get("ir.session")\nSession.delete(Session.search([]))')
    assert len((await rows(connector, "stores"))[0]) == 2


async def test_a_refused_login_is_not_retried_at_once(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector]
) -> None:
    # A login of its own: Tryton slows down and then locks out a login that keeps failing.
    connector = connect(user="gateway-nobody")
    with pytest.raises(ErpUnavailable, match="refused the login of 'gateway-nobody'"):
        await rows(connector, "stores")
    with pytest.raises(ErpUnavailable, match="not tried again"):
        await rows(connector, "products")
    attempts = tryton.run(
        'Attempt = pool.get("res.user.login.attempt")\n'
        'result = Attempt.search_count([("login", "=", "gateway-nobody")])'
    )
    assert attempts == 1


async def test_a_wrong_rest_key_is_refused(connect: Callable[..., TrytonConnector]) -> None:
    connector = connect("rest", api_key=Secret("wrong"))
    with pytest.raises(ErpUnavailable, match="refused the REST key"):
        await rows(connector, "stores")


@pytest.mark.parametrize("mode", ["rpc", "rest"])
async def test_tryton_down_is_unavailable_and_back_is_read_again(
    tryton: TrytonServer, connect: Callable[..., TrytonConnector], mode: str
) -> None:
    connector = connect(mode)
    assert len((await rows(connector, "stores"))[0]) == 2
    tryton.stop(kill=True)
    with pytest.raises(ErpUnavailable, match=f"Tryton at {tryton.url} unreachable"):
        await rows(connector, "products")
    tryton.start()
    assert len((await rows(connector, "products"))[0]) == 50


async def test_open_connector_gives_the_tryton_one(make_config: Callable[..., Any]) -> None:
    config = make_config("", "tp", '[erp]\nconnector = "tryton"', erp__tryton__password="x")
    connector = open_connector(config)
    assert isinstance(connector, TrytonConnector)
    await connector.close()


# -- whole syncs ----------------------------------------------------------------------------


@pytest.fixture
def sync_to(
    connect: Callable[..., TrytonConnector],
    warehouse: Warehouse,
    redis_client: aioredis.Redis,
    prefix: str,
) -> Callable[..., ErpSync]:
    """``sync_to(mode, **settings)`` → the syncs of a Tryton connector into this test's
    warehouse (DuckDB, then PostgreSQL) and keys."""

    def make(mode: str = "rpc", **values: Any) -> ErpSync:
        keys = Keys(prefix)
        bus = Bus(redis_client, keys, BusConfig())
        return ErpSync(connect(mode, **values), warehouse, redis_client, keys, bus, ErpConfig())

    return make


async def erp_events(syncer: ErpSync, name: str | None = None) -> list[Event]:
    """The ERP events published, oldest first."""
    entries = await syncer.bus.latest(EVENTS, 1000)
    found = [e for entry in reversed(entries) for e in entry.events if e.channel == "erp"]
    return [e for e in found if name is None or e.name == name]


async def test_a_full_sync_loads_tryton(
    sync_to: Callable[..., ErpSync], warehouse: Warehouse
) -> None:
    syncer = sync_to("rest")
    results = await syncer.run_due()
    assert [(r.entity, r.rows, r.skipped, r.error) for r in results] == [
        ("stores", 2, 0, None),
        ("products", 50, 0, None),
        ("stock", 100, 0, None),
        ("customers", 20, 0, None),
        ("sales", 12, 0, None),
    ]
    product = await warehouse.fetch(
        "SELECT name, price, cost, category, currency FROM dim_product WHERE sku = $1",
        ["SKU-001"],
    )
    assert product == [
        {"name": "Product 001", "price": 11.01, "cost": 6.0, "category": "Bags", "currency": "USD"}
    ]
    stores = await warehouse.fetch("SELECT store_id, name FROM dim_store ORDER BY store_id")
    assert stores == [
        {"store_id": "WH", "name": "Warehouse"},
        {"store_id": "WH2", "name": "Second Warehouse"},
    ]
    counted = await warehouse.fetch("SELECT count(*) AS n FROM product_stock")
    assert counted == [{"n": 100}]
    redis, keys = syncer.redis, syncer.keys
    assert await stock.stock_levels(redis, keys, "SKU-001") == {"WH": 7.0, "WH2": 1.0}
    assert await stock.in_stock(redis, keys, "SKU-015", "WH2")
    assert not await stock.in_stock(redis, keys, "SKU-016", "WH2")
    assert not await stock.is_stale(redis, keys)

    assert await erp_events(syncer, "Stock Changed") == []  # the first stock sync: a baseline
    parties = [e.traits for e in await erp_events(syncer) if e.type == "identify"]
    assert len(parties) == 20
    assert parties[0] == {"erpPartyId": "CUST-001", "email": "customer001@example.com",
                          "phone": "+15550000001", "name": "Customer 001"}  # fmt: skip
    orders = await erp_events(syncer, "Order Completed")
    assert [o.properties["order_id"] for o in orders] == ["2", "3", "4", "5", "6"]
    first = orders[0]
    assert first.properties["products"] == [
        {"sku": "SKU-005", "quantity": 1.0, "price": 15.05},
        {"sku": "SKU-006", "quantity": 2.0, "price": 16.06},
    ]
    assert first.properties["revenue"] == pytest.approx(47.17)
    assert first.properties["store_id"] == "WH"
    assert first.context["traits"] == {"erpPartyId": "CUST-003"}
    assert first.timestamp == datetime(2025, 3, 12, tzinfo=UTC)


async def test_changes_in_tryton_reach_the_gateway_on_the_next_poll(
    tryton: TrytonServer, sync_to: Callable[..., ErpSync], warehouse: Warehouse
) -> None:
    syncer = sync_to()
    await syncer.run_due()
    redis, keys = syncer.redis, syncer.keys

    tryton.stock_move("SKU-049", 4, warehouse="WH2")
    result = await syncer.sync("stock")
    assert (result.rows, result.changed, result.error) == (2, 1, None)  # WH stays 0
    [changed] = await erp_events(syncer, "Stock Changed")
    assert changed.properties == {"sku": "SKU-049", "location": "WH2", "old": 0.0, "new": 4.0}
    assert await stock.stock_levels(redis, keys, "SKU-049") == {"WH": 0.0, "WH2": 4.0}
    assert await stock.in_stock(redis, keys, "SKU-049", "WH2")
    assert (await syncer.sync("stock")).changed == 0  # polled again: nothing new, no event

    tryton.set_list_price("SKU-002", "99.99")
    result = await syncer.sync("products")
    assert (result.rows, result.error) == (1, None)
    price = await warehouse.fetch("SELECT price FROM dim_product WHERE sku = $1", ["SKU-002"])
    assert price == [{"price": 99.99}]

    tryton.create_party("CUST-100", "New Customer", email="new@example.com")
    result = await syncer.sync("customers")
    assert (result.rows, result.changed, result.error) == (1, 1, None)
    newest = [e for e in await erp_events(syncer) if e.type == "identify"][-1]
    assert newest.traits == {"erpPartyId": "CUST-100", "email": "new@example.com",
                             "name": "New Customer"}  # fmt: skip


async def test_a_sku_renamed_in_tryton_discontinues_the_old_one_and_keeps_the_stock(
    tryton: TrytonServer, sync_to: Callable[..., ErpSync], warehouse: Warehouse
) -> None:
    syncer = sync_to()
    await syncer.run_due()
    redis, keys = syncer.redis, syncer.keys
    levels = await stock.stock_levels(redis, keys, "SKU-007")
    assert levels and any(q > 0 for q in levels.values())
    tryton.run(
        """
Template = pool.get("product.template")
Template.write(Template.search([("code", "=", "SKU-007")]), {"code": "SKU-007-B"})
"""
    )
    result = await syncer.sync("products")
    assert (result.rows, result.error) == (1, None)
    rows = await warehouse.fetch(
        "SELECT sku, name, active FROM dim_product WHERE sku LIKE 'SKU-007%' ORDER BY sku"
    )
    assert rows == [
        {"sku": "SKU-007", "name": "Product 007", "active": False},
        {"sku": "SKU-007-B", "name": "Product 007", "active": True},
    ]
    assert await stock.stock_levels(redis, keys, "SKU-007-B") == levels  # the goods stayed
    where = next(location for location, quantity in levels.items() if quantity > 0)
    assert await stock.in_stock(redis, keys, "SKU-007-B", where)
    assert not await stock.in_stock(redis, keys, "SKU-007", where)
    carried = await warehouse.fetch(
        "SELECT location, quantity FROM product_stock WHERE sku = $1 ORDER BY location",
        ["SKU-007-B"],
    )
    assert {r["location"]: r["quantity"] for r in carried} == levels


async def test_tryton_stopped_mid_sync_leaves_stock_stale_until_it_is_back(
    tryton: TrytonServer, sync_to: Callable[..., ErpSync]
) -> None:
    for entity in ("stores", "stock"):
        assert (await sync_to(overlap=0.001).sync(entity)).error is None
    # A restarted gateway (a connector that remembers nothing) reading one level a page: the
    # moves done with the latest one before the cursor are read again, with the new ones.
    syncer = sync_to(page_size=1, overlap=0.001)
    redis, keys = syncer.redis, syncer.keys
    cursor = await stock.cursor(redis, keys, "stock", "TrytonConnector")
    tryton.stock_move("SKU-050", 5, warehouse="WH")
    tryton.stock_move("SKU-049", 3, warehouse="WH2")

    def crash_after_first_page(rows: int, total: int | None) -> None:
        tryton.stop(kill=True)

    result = await syncer.sync("stock", progress=crash_after_first_page)
    assert result.error is not None and f"Tryton at {tryton.url} unreachable" in result.error
    assert await stock.is_stale(redis, keys)
    assert (
        await stock.cursor(redis, keys, "stock", "TrytonConnector") == cursor
    )  # not past what was not read
    assert await stock.stock_levels(redis, keys, "SKU-001") == {"WH": 7.0, "WH2": 1.0}

    tryton.start()
    result = await syncer.sync("stock")
    assert (result.changed, result.error) == (2, None)
    assert result.rows > 4
    assert not await stock.is_stale(redis, keys)
    assert await stock.cursor(redis, keys, "stock", "TrytonConnector") > cursor
    assert await stock.stock_levels(redis, keys, "SKU-050") == {"WH": 5.0, "WH2": 0.0}
    assert await stock.stock_levels(redis, keys, "SKU-049") == {"WH": 0.0, "WH2": 3.0}
    changes = [e.properties for e in await erp_events(syncer, "Stock Changed")]
    assert sorted((c["sku"], c["location"], c["old"], c["new"]) for c in changes) == [
        ("SKU-049", "WH2", 0.0, 3.0),
        ("SKU-050", "WH", 0.0, 5.0),
    ]


async def test_a_tryton_party_joins_the_web_visitor_and_its_order_reaches_fact_sale(
    sync_to: Callable[..., ErpSync],
    warehouse: Warehouse,
    make_config: Callable[..., Config],
    prefix: str,
) -> None:
    syncer = sync_to("rest")
    config = make_config("", prefix, BUS, COLLECTOR)
    bus = Bus(syncer.redis, syncer.keys, config.bus)  # short blocking reads
    chain = Chain(config, syncer.redis, bus)
    context = AgentContext(config, syncer.redis, syncer.keys, bus, warehouse)
    chain.handlers["sync"] = AGENTS["sync"].make(context)
    collected = ("filter", "sessions", "identity", "profile", "sync")
    await chain.publish([ev("w1", type="identify", traits={"email": "Customer003@Example.com"})])
    await chain.run(*collected)

    for entity in ("customers", "sales"):
        assert (await syncer.sync(entity)).error is None
    await chain.run(*collected)

    visitor = await find_customer(chain.client, chain.keys, "demo", "anonymous_id", "a1")
    assert visitor is not None
    assert await find_customer(chain.client, chain.keys, "demo", "erp_party_id", "CUST-003") == (
        visitor
    )
    profile = await get_profile(chain.client, chain.keys, visitor)
    assert profile is not None
    assert profile.traits["name"].value == "Customer 003"
    assert profile.counters.revenue == pytest.approx(47.17)  # sale "2": 1 x 15.05 + 2 x 16.06
    lines = await warehouse.fetch(
        "SELECT order_id, sku, quantity, customer_id, store_id FROM fact_sale "
        "WHERE customer_id = $1 ORDER BY order_id, line_no",
        [visitor],
    )
    assert [(r["order_id"], r["sku"], r["quantity"], r["store_id"]) for r in lines] == [
        ("2", "SKU-005", 1.0, "WH"),
        ("2", "SKU-006", 2.0, "WH"),
    ]
