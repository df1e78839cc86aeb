"""ERP customers and sales through the collector: a party joins the web visitor who gave the
same e-mail; an ERP order lands in ``fact_sale`` and the profile, once, even when re-read; an
order cancelled after it was loaded is taken back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.bus import Bus
from gateway.config import Config
from gateway.datamart.profiles import find_customer, get_profile
from gateway.erp.sync import ErpSync
from gateway.events import Event
from gateway.warehouse import Warehouse
from tests.gateway.agents.chain import BUS, COLLECTOR, Chain, ev
from tests.gateway.erp.test_sync import drop_file

COLLECTED = ("filter", "sessions", "identity", "profile", "sync")
SALE_HEADER = "order_id,sku,quantity,unit_price,currency,ordered_at,party_id,store_id,state\n"


@pytest.fixture
def chain(
    syncer: ErpSync,
    warehouse: Warehouse,
    make_config: Callable[..., Config],
    prefix: str,
    drop: Path,
) -> Chain:
    """The collector (with the warehouse sync) on the syncer's bus and warehouse."""
    drop.mkdir(parents=True)
    config = make_config("", prefix, BUS, COLLECTOR)
    bus = Bus(syncer.redis, syncer.keys, config.bus)  # short blocking reads
    chain = Chain(config, syncer.redis, bus)
    ctx = AgentContext(config, syncer.redis, syncer.keys, bus, warehouse)
    chain.handlers["sync"] = AGENTS["sync"].make(ctx)
    return chain


async def erp_events(chain: Chain) -> list[Event]:
    return [e for e in await chain.events(K.EVENTS) if e.channel == "erp"]


async def test_a_party_joins_the_web_visitor_with_its_email(
    syncer: ErpSync, chain: Chain, drop: Path
) -> None:
    await chain.publish([ev("w1", type="identify", traits={"email": "Alice@Example.com"})])
    await chain.run(*COLLECTED)
    customers = "party_id,email,phone,name\nP-7,alice@example.com,+33 1 23 45 67 89,Alice Martin\n"
    drop_file(drop, "customers-1.csv", customers + "P-8,,,Bob Durand\n,nobody@example.com,,\n")

    result = await syncer.sync("customers")
    assert (result.rows, result.skipped, result.changed, result.error) == (2, 1, 2, None)
    await chain.run(*COLLECTED)

    visitor = await find_customer(chain.client, chain.keys, "demo", "anonymous_id", "a1")
    assert visitor is not None
    assert await find_customer(chain.client, chain.keys, "demo", "erp_party_id", "P-7") == visitor
    bob = await find_customer(chain.client, chain.keys, "demo", "erp_party_id", "P-8")
    assert bob is not None and bob != visitor
    profile = await get_profile(chain.client, chain.keys, visitor)
    assert profile is not None
    assert profile.traits["name"].value == "Alice Martin"
    assert profile.traits["name"].channel == "erp"
    assert "erp_party_id:P-7" in profile.identifiers

    # The same parties again (a re-read): the same events, dropped by the filter.
    before = [e.event_id for e in await erp_events(chain)]
    drop_file(drop, "customers-2.csv", customers)
    assert (await syncer.sync("customers")).changed == 1
    again = await erp_events(chain)
    assert again[-1].event_id in before
    await chain.run(*COLLECTED)
    rows = await syncer.warehouse.fetch(
        "SELECT erp_party_id FROM dim_customer WHERE customer_id = $1", [visitor]
    )
    assert rows == [{"erp_party_id": "P-7"}]


async def test_erp_orders_reach_fact_sale_and_the_profile_once(
    syncer: ErpSync, chain: Chain, warehouse: Warehouse, drop: Path
) -> None:
    drop_file(drop, "customers-1.csv", "party_id,email\nP-7,alice@example.com\n")
    await syncer.sync("customers")
    drop_file(
        drop,
        "sales-1.csv",
        SALE_HEADER
        + "SO-1,SKU-1001,2,89.90,EUR,2024-03-04T10:00:00+00:00,P-7,store-1,done\n"
        + "SO-1,SKU-1002,1,20,EUR,2024-03-04T10:00:00+00:00,P-7,store-1,done\n"
        + "SO-2,SKU-1002,1,20,EUR,2024-03-04T11:00:00+00:00,P-7,,cancelled\n"
        + "SO-3,SKU-1003,x,20,EUR,2024-03-04T12:00:00+00:00,P-7,,done\n",
    )
    result = await syncer.sync("sales")
    assert (result.rows, result.skipped, result.changed) == (3, 1, 1)  # SO-2 never counted
    [order] = [e for e in await erp_events(chain) if e.name == "Order Completed"]
    assert order.properties["order_id"] == "SO-1"
    assert order.properties["revenue"] == pytest.approx(199.8)
    assert order.timestamp.isoformat() == "2024-03-04T10:00:00+00:00"
    await chain.run(*COLLECTED)

    alice = await find_customer(chain.client, chain.keys, "demo", "erp_party_id", "P-7")
    assert alice is not None
    lines = await warehouse.fetch(
        "SELECT order_id, sku, quantity, revenue, customer_id, store_id, channel FROM fact_sale "
        "ORDER BY order_id, line_no"
    )
    assert [(r["order_id"], r["sku"], r["quantity"]) for r in lines] == [
        ("SO-1", "SKU-1001", 2.0),
        ("SO-1", "SKU-1002", 1.0),
    ]
    assert {(r["customer_id"], r["store_id"], r["channel"]) for r in lines} == {
        (alice, "store-1", "erp")
    }

    # A full re-read loads nothing twice; SO-1 cancelled in the ERP is taken back.
    drop_file(
        drop,
        "sales-2.csv",
        SALE_HEADER
        + "SO-1,SKU-1001,2,89.90,EUR,2024-03-04T10:00:00+00:00,P-7,store-1,cancelled\n"
        + "SO-1,SKU-1002,1,20,EUR,2024-03-04T10:00:00+00:00,P-7,store-1,cancelled\n",
    )
    drop_file(
        drop,
        "sales-3.csv",
        SALE_HEADER + "SO-1,SKU-1001,2,89.90,EUR,2024-03-04T10:00:00+00:00,P-7,store-1,done\n",
    )
    assert (await syncer.sync("sales", full=True)).changed == 1
    await chain.run(*COLLECTED)
    profile = await get_profile(chain.client, chain.keys, alice)
    assert profile is not None
    assert profile.counters.revenue == pytest.approx(0.0)
    total = await warehouse.fetch("SELECT sum(revenue) AS revenue FROM fact_sale")
    assert total[0]["revenue"] == pytest.approx(0.0)


async def test_a_sale_no_event_can_have_blocks_no_file(
    syncer: ErpSync, warehouse: Warehouse, drop: Path
) -> None:
    """An order dated after year 9999 in UTC is skipped like any bad row: the rest of its
    file and the files after it load, and both files are done with."""
    assert (await syncer.sync("sales")).rows == 0  # the drop folder made
    drop_file(
        drop,
        "sales-a.csv",
        SALE_HEADER
        + "y9,SKU-1001,1,10,EUR,9999-12-31T23:59:59-12:00,,,done\n"
        + "y1,SKU-1001,1,10,EUR,2024-03-04T10:00:00+00:00,,,done\n",
    )
    drop_file(
        drop, "sales-b.csv", SALE_HEADER + "y2,SKU-1002,1,20,EUR,2024-03-04T11:00:00,,,done\n"
    )
    result = await syncer.sync("sales")
    assert (result.rows, result.skipped, result.changed, result.error) == (2, 1, 2, None)
    assert sorted(p.name for p in (drop / "done").iterdir()) == ["sales-a.csv", "sales-b.csv"]
    orders = [e for entry in await syncer.bus.latest(K.EVENTS, 10) for e in entry.events]
    assert sorted(e.properties["order_id"] for e in orders) == ["y1", "y2"]
