"""Syncs on both warehouse engines and the real Redis: the demo seed, a drop that changes a
price and a stock level, a bad file and a bad row, XML, an ERP that goes away and comes back."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.erp import stock
from gateway.erp.base import Product, StockLevel
from gateway.erp.sync import Change, ErpSync, latest_levels, retry_delay, stock_changes
from gateway.keys import EVENTS, Keys
from gateway.warehouse import Warehouse


def drop_file(folder: Path, name: str, text: str) -> None:
    """A drop written aside and renamed in, newer than anything before it."""
    partial = folder / f".{name}.tmp"
    partial.write_text(text)
    now = time.time_ns() + 1_000_000_000
    os.utime(partial, ns=(now, now))
    partial.rename(folder / name)


def take_away(drop: Path) -> Path:
    """The share is gone: a file stands where the folder was, reading it fails."""
    moved = drop.with_name("moved-away")
    drop.rename(moved)
    drop.write_text("not a folder")
    return moved


def bring_back(drop: Path, moved: Path) -> None:
    drop.unlink()
    moved.rename(drop)


async def stock_events(syncer: ErpSync) -> list[dict[str, Any]]:
    entries = await syncer.bus.latest(EVENTS, 100)
    return [
        e.properties
        for entry in entries
        for e in entry.events
        if e.name == "Stock Changed" and e.channel == "erp"
    ]


async def one(warehouse: Warehouse, sql: str, *params: Any) -> Any:
    rows = await warehouse.fetch(sql, list(params))
    return rows[0] if rows else None


async def test_the_demo_catalogue_seeds_products_stock_and_stores(
    syncer: ErpSync, warehouse: Warehouse
) -> None:
    results = await syncer.run_due()
    assert [(r.entity, r.rows, r.error) for r in results] == [
        ("stores", 3, None),
        ("products", 12, None),
        ("stock", 36, None),
        ("customers", 0, None),
        ("sales", 0, None),
    ]
    assert (await one(warehouse, "SELECT count(*) AS n FROM dim_product"))["n"] == 12
    assert (await one(warehouse, "SELECT count(*) AS n FROM dim_store"))["n"] == 3
    assert (await one(warehouse, "SELECT count(*) AS n FROM product_stock"))["n"] == 36
    shoe = await one(
        warehouse, "SELECT price, currency FROM dim_product WHERE sku = $1", "SKU-1001"
    )
    assert shoe == {"price": 89.9, "currency": "EUR"}
    redis, keys = syncer.redis, syncer.keys
    assert await stock.stock_levels(redis, keys, "SKU-1001") == {
        "web": 42.0,
        "store-1": 5.0,
        "store-2": 0.0,
    }
    assert await stock.in_stock(redis, keys, "SKU-1001", "store-1")
    assert not await stock.in_stock(redis, keys, "SKU-1001", "store-2")
    assert not await stock.in_stock(redis, keys, "SKU-1001", "nowhere")
    assert await stock.last_sync(redis, keys) is not None
    assert not await stock.is_stale(redis, keys)
    assert await stock_events(syncer) == []  # the first stock sync is a baseline, not a change
    # Cursors belong to the connector that kept them: another one starts from scratch.
    assert await stock.cursor(redis, keys, "stock", "FileConnector") is not None
    assert await stock.cursor(redis, keys, "stock", "TrytonConnector") is None
    assert await syncer.run_due() == []  # nothing due before the intervals


async def test_a_drop_updates_price_and_stock_and_says_what_changed(
    syncer: ErpSync, warehouse: Warehouse, drop: Path
) -> None:
    await syncer.run_due()
    drop_file(
        drop,
        "products-0412.csv",
        "sku,name,category,price,cost,currency\n"
        "SKU-1001,Trail Running Shoes,Footwear,79.90,41,EUR\n",
    )
    drop_file(
        drop,
        "stock-0412.csv",
        "sku,location,quantity\nSKU-1001,store-1,0\nSKU-1001,store-2,4\nSKU-1001,web,lots\n"
        "SKU-1001,web,42\n",
    )
    assert (await syncer.sync("products")).rows == 1
    result = await syncer.sync("stock")
    assert (result.rows, result.skipped, result.changed) == (3, 1, 2)

    price = await one(warehouse, "SELECT price FROM dim_product WHERE sku = $1", "SKU-1001")
    assert price == {"price": 79.9}
    levels = await warehouse.fetch(
        "SELECT location, quantity, confirmed_at FROM product_stock WHERE sku = $1 "
        "ORDER BY location",
        ["SKU-1001"],
    )
    assert [(r["location"], r["quantity"]) for r in levels] == [
        ("store-1", 0.0),
        ("store-2", 4.0),
        ("web", 42.0),
    ]
    assert all(r["confirmed_at"] is not None for r in levels)
    assert not await stock.in_stock(syncer.redis, syncer.keys, "SKU-1001", "store-1")
    assert await stock.in_stock(syncer.redis, syncer.keys, "SKU-1001", "store-2")

    new = await stock_events(syncer)
    assert sorted(new, key=lambda p: p["location"]) == [
        {"sku": "SKU-1001", "location": "store-1", "old": 5.0, "new": 0.0},
        {"sku": "SKU-1001", "location": "store-2", "old": 0.0, "new": 4.0},
    ]
    status = await stock.status(syncer.redis, syncer.keys)
    assert status["stock"]["skipped"] == 1 and status["stock"]["stale"] is False
    assert (drop / "done" / "stock-0412.csv").exists()


async def test_a_discontinued_product_is_never_in_stock_until_sold_again(
    syncer: ErpSync, warehouse: Warehouse, drop: Path
) -> None:
    await syncer.run_due()
    redis, keys = syncer.redis, syncer.keys
    assert await stock.in_stock(redis, keys, "SKU-1001", "store-1")
    header = "sku,name,price,currency,active\n"
    drop_file(drop, "products-0501.csv", f"{header}SKU-1001,Trail Running Shoes,89.90,EUR,0\n")
    assert (await syncer.sync("products")).rows == 1
    row = await one(warehouse, "SELECT active FROM dim_product WHERE sku = $1", "SKU-1001")
    assert row == {"active": False}
    assert not await stock.in_stock(redis, keys, "SKU-1001", "store-1")  # 5 on hand: not sold
    assert await stock.stock_levels(redis, keys, "SKU-1001") != {}  # the levels are kept
    assert await stock.in_stock(redis, keys, "SKU-1002", "web")  # the others are untouched

    drop_file(drop, "products-0502.csv", f"{header}SKU-1001,Trail Running Shoes,89.90,EUR,\n")
    assert (await syncer.sync("products")).rows == 1  # no value: active again
    row = await one(warehouse, "SELECT active FROM dim_product WHERE sku = $1", "SKU-1001")
    assert row == {"active": True}
    assert await stock.in_stock(redis, keys, "SKU-1001", "store-1")


async def test_renames_are_seen_in_a_large_page(redis_client: Any, prefix: str) -> None:
    keys = Keys(prefix)
    products = [Product(f"SKU-{n}", "P", 1.0, "EUR", erp_id=str(n)) for n in range(6000)]
    assert await stock.renamed(redis_client, keys, products) == []  # never noted: no rename
    await stock.record_names(redis_client, keys, products)
    changed = [*products[:-1], Product("SKU-NEW", "P", 1.0, "EUR", erp_id="5999")]
    assert await stock.renamed(redis_client, keys, changed) == [("SKU-5999", "SKU-NEW")]


async def test_a_malformed_file_fails_alone(syncer: ErpSync, drop: Path) -> None:
    await syncer.run_due()
    drop_file(drop, "stock-bad.csv", "sku;location;quantity\nSKU-1001;web;1\n")
    drop_file(drop, "stock-good.xml", "<s><l sku='SKU-1002' location='web' quantity='1'/></s>")
    result = await syncer.sync("stock")
    assert (result.rows, result.changed, result.error) == (1, 1, None)
    assert result.failed is not None and list(result.failed) == ["stock-bad.csv"]
    assert "missing column(s)" in result.failed["stock-bad.csv"]
    assert "missing column(s)" in (drop / "failed" / "stock-bad.csv.reason").read_text()
    assert (await stock.stock_levels(syncer.redis, syncer.keys, "SKU-1002"))["web"] == 1.0


async def test_an_unreachable_erp_marks_stale_then_recovers(
    syncer: ErpSync, warehouse: Warehouse, drop: Path
) -> None:
    await syncer.run_due()
    redis, keys = syncer.redis, syncer.keys
    synced = await stock.last_sync(redis, keys)
    moved = take_away(drop)

    result = await syncer.sync("stock")
    assert result.error is not None and "erp drop folder" in result.error
    assert await stock.is_stale(redis, keys)
    assert await stock.last_sync(redis, keys) == synced  # the last good sync, kept
    assert await stock.in_stock(redis, keys, "SKU-1001", "web")  # last known stock, kept
    assert syncer.failures["stock"] == 1
    assert syncer.next_due["stock"] > syncer.clock()
    await syncer.sync("stock")
    assert (await stock.status(redis, keys))["stock"]["failures"] == 2

    bring_back(drop, moved)
    drop_file(drop, "stock-back.csv", "sku,location,quantity\nSKU-1001,web,41\n")
    result = await syncer.sync("stock")
    assert (result.error, result.changed) == (None, 1)
    assert not await stock.is_stale(redis, keys)
    last = await stock.last_sync(redis, keys)
    assert synced is not None and last is not None and last > synced
    status = (await stock.status(redis, keys))["stock"]
    assert status["failures"] == 0 and "error" not in status
    row = await one(
        warehouse,
        "SELECT quantity FROM product_stock WHERE sku = $1 AND location = $2",
        "SKU-1001",
        "web",
    )
    assert row == {"quantity": 41.0}


async def test_a_replayed_page_publishes_nothing_new(syncer: ErpSync, drop: Path) -> None:
    """Crash after the load, before the files moved: the retry changes nothing."""
    await syncer.run_due()
    drop_file(drop, "stock-r.csv", "sku,location,quantity\nSKU-1001,web,40\n")
    assert (await syncer.sync("stock")).changed == 1
    (drop / "done" / "stock-r.csv").rename(drop / "stock-r.csv")  # as if never moved
    assert (await syncer.sync("stock")).changed == 0


def test_retry_delay_doubles_up_to_the_cap() -> None:
    assert [retry_delay(15, n, 100) for n in (1, 2, 3, 4, 5)] == [15, 30, 60, 100, 100]
    assert retry_delay(600, 3, 300) == 600  # never more often than the interval


@pytest.mark.parametrize(
    ("known", "expected"),
    [
        ({}, [Change("A", "web", None, 2.0)]),
        ({("A", "web"): 2.0}, []),
        ({("A", "web"): 5.0, ("A", "store-1"): 2.0}, [Change("A", "web", 5.0, 2.0)]),
    ],
)
def test_stock_changes(known: dict[tuple[str, str], float], expected: list[Change]) -> None:
    levels = latest_levels([StockLevel("A", "web", 9.0), StockLevel("A", "web", 2.0)])
    assert levels == [StockLevel("A", "web", 2.0)]  # the last one counts
    assert stock_changes(levels, known) == expected
