"""The file connector: parsing without I/O, then a drop folder on disk (no services)."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ErpFilesConfig, ProductColumns
from gateway.erp.base import Customer, Entity, Page, Product, StockLevel, check_rows
from gateway.erp.files import SEEDED_MARKER, FileConnector, FileError, parse_file

PRODUCTS = ProductColumns()
COLUMNS = dataclasses.asdict(PRODUCTS)
STOCK = {"sku": "sku", "location": "location", "quantity": "quantity"}


def test_csv_rows_are_typed_and_extra_columns_ignored() -> None:
    data = b"sku,name,category,price,cost,currency,description\nA,Shoe,Footwear,89.90,,EUR,x\n"
    rows, skipped = parse_file("products", "products.csv", data, COLUMNS)
    assert rows == [Product(sku="A", name="Shoe", price=89.9, currency="EUR", category="Footwear")]
    assert skipped == 0


def test_a_malformed_row_is_skipped_and_counted() -> None:
    data = b"sku,location,quantity\nA,web,3\nB,web,lots\nC,store-1,0\n,web,2\n"
    rows, skipped = parse_file("stock", "stock.csv", data, STOCK)
    assert rows == [StockLevel("A", "web", 3.0), StockLevel("C", "store-1", 0.0)]
    assert skipped == 2


def test_the_column_mapping_renames() -> None:
    mapping = {"sku": "Article", "location": "Depot", "quantity": "OnHand"}
    rows, _ = parse_file("stock", "stock.csv", b"Article,Depot,OnHand\nA,web,7\n", mapping)
    assert rows == [StockLevel("A", "web", 7.0)]


def test_xml_rows_from_attributes_and_child_elements() -> None:
    data = b"""<?xml version="1.0"?>
    <stock>
      <level sku="A" location="web" quantity="3"/>
      <level><sku>B</sku><location>store-1</location><quantity>0</quantity></level>
      <level sku="C" location="web"/>
    </stock>"""
    rows, skipped = parse_file("stock", "stock.xml", data, STOCK)
    assert rows == [StockLevel("A", "web", 3.0), StockLevel("B", "store-1", 0.0)]
    assert skipped == 1


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("stock.csv", b"sku,quantity\nA,3\n", "missing column(s): location"),
        ("stock.csv", b"", "empty file"),
        ("stock.xml", b"<stock><level sku='A'></stock>", "bad XML"),
        ("stock.csv", b"sku,location,quantity\n\xff\xfe,web,1\n", "not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_read(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(FileError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_file("stock", name, data, STOCK)


HEADERS: dict[str, str] = {
    "products": "sku,name,price,cost,currency",
    "stock": "sku,location,quantity",
    "stores": "store_id,timezone",
    "sales": "order_id,sku,quantity,unit_price,currency,ordered_at",
}
#: A good row of each entity, read after the bad one.
GOOD: dict[str, str] = {
    "products": "Y,Hat,10,,EUR",
    "stock": "Y,web,3",
    "stores": "Y,Europe/Paris",
    "sales": "Y,A,1,10,EUR,2026-03-01T10:00:00+01:00",
}
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entity", "bad", "reason"),
    [
        ("products", "X,Hat,nan,,EUR", "price"),
        ("products", "X,Hat,10,-inf,EUR", "cost"),
        ("products", "X,Hat,1e13,,EUR", "price"),
        ("products", "X,Hat,10,,123456789", "currency"),
        ("products", "X,H\0at,10,,EUR", "name: holds a NUL character"),  # PostgreSQL: no text
        ("stock", "X,web,nan", "quantity"),
        ("stock", "X,web,1e30", "quantity"),
        ("stores", "X,Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("stores", "X,../etc/passwd", "unknown time zone"),
        ("sales", "X,A,1,nan,EUR,2026-03-01T10:00:00", "unit_price"),
        ("sales", "X,A,1e308,1e308,EUR,2026-03-01T10:00:00", "quantity"),
        ("sales", "X,A,2000000,1,EUR,2026-03-01T10:00:00", "quantity"),
        ("sales", "X,A,1,10,EUR,9999-12-31T23:59:59-12:00", "ordered_at"),  # after 9999 in UTC
        ("sales", "X,A,1,10,EUR,0001-01-01T00:00:00+14:00", "ordered_at"),  # before year 1
        ("sales", "X,A,1,10,EUR,1999-12-31T23:59:59", "ordered_at"),
        ("sales", "X,A,1,10,EUR,2026-03-02T12:00:01+00:00", "ordered_at"),  # over a day ahead
    ],
)
def test_values_nothing_downstream_can_hold_skip_their_row(
    entity: Entity, bad: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not finite, not believable, not a currency or a time zone, or a sale dated when no
    event can be: the row is skipped and named with why; the rows after it are read."""
    header = HEADERS[entity].split(",")
    raw = [dict(zip(header, line.split(","), strict=True)) for line in (bad, GOOD[entity])]
    rows, skipped = check_rows(entity, raw, " (drop.csv)", now=NOW)
    assert skipped == 1 and [getattr(r, header[0]) for r in rows] == ["Y"]
    [record] = [r for r in caplog.records if r.name == "gateway.erp.base"]
    assert record.levelname == "WARNING"
    assert "(drop.csv): skipped X:" in record.getMessage() and reason in record.getMessage()


def test_stock_below_zero_and_discount_lines_are_kept() -> None:
    """Some ERPs count stock below zero, and sell a discount as a line of negative price."""
    rows, skipped = check_rows("stock", [{"sku": "A", "location": "web", "quantity": "-4"}])
    assert (rows, skipped) == ([StockLevel("A", "web", -4.0)], 0)
    line = {"order_id": "O", "sku": "D", "quantity": "1", "unit_price": "-5", "currency": "EUR",
            "ordered_at": "2026-03-01T10:00:00"}  # fmt: skip
    rows, skipped = check_rows("sales", [line], now=NOW)
    assert skipped == 0 and rows[0].unit_price == -5.0
    rows, _ = check_rows("sales", [{**line, "currency": " eur"}], now=NOW)
    assert rows[0].currency == "EUR"  # as an ERP may write it


def test_customers_are_read() -> None:
    rows, skipped = check_rows(
        "customers", [{"party_id": "P1", "email": "a@example.com"}, {"email": "x"}]
    )
    assert rows == [Customer(party_id="P1", email="a@example.com")]
    assert skipped == 1


async def pages(connector: FileConnector, entity: Entity) -> list[Page[Any]]:
    return [page async for page in connector.read(entity, None)]


async def test_the_demo_catalogue_is_dropped_once(tmp_path: Path) -> None:
    connector = FileConnector(tmp_path / "drop")
    [page] = await pages(connector, "products")
    assert len(page.rows) == 12 and page.skipped == 0
    assert (tmp_path / "drop" / SEEDED_MARKER).exists()
    await connector.confirm("products", page)
    assert (tmp_path / "drop" / "done" / "products-demo.csv").exists()
    assert await pages(connector, "products") == []  # not dropped a second time

    off = FileConnector(tmp_path / "other", ErpFilesConfig(seed_demo=False))
    assert await pages(off, "stock") == []


async def test_one_page_per_file_oldest_first(tmp_path: Path) -> None:
    connector = FileConnector(tmp_path, ErpFilesConfig(seed_demo=False))
    for n, sku in enumerate(["A", "B"]):
        path = tmp_path / f"stock-{sku}.csv"
        path.write_text(f"sku,location,quantity\n{sku},web,1\n")
        os.utime(path, ns=(n * 10**9, (2 - n) * 10**9))  # B older than A
    assert [[r.sku for r in p.rows] for p in await pages(connector, "stock")] == [["B"], ["A"]]


async def test_a_file_is_moved_only_once_confirmed(tmp_path: Path) -> None:
    connector = FileConnector(tmp_path, ErpFilesConfig(seed_demo=False))
    (tmp_path / "stock-1.csv").write_text("sku,location,quantity\nA,web,1\n")
    (tmp_path / ".stock-2.csv").write_text("sku,location,quantity\nB,web,1\n")  # being written
    (tmp_path / "stock-3.csv.tmp").write_text("sku,location,quantity\nC,web,1\n")
    [page] = await pages(connector, "stock")
    assert page.rows == [StockLevel("A", "web", 1.0)]
    assert page.cursor is not None and page.cursor.startswith("stock-1.csv:")
    assert [p.rows for p in await pages(connector, "stock")] == [page.rows]  # read again
    await connector.confirm("stock", page)
    assert await pages(connector, "stock") == []
    assert (tmp_path / "done" / "stock-1.csv").exists()


async def test_a_malformed_file_goes_to_failed_with_its_reason(tmp_path: Path) -> None:
    connector = FileConnector(tmp_path, ErpFilesConfig(seed_demo=False))
    (tmp_path / "products-bad.csv").write_text("sku,name\nA,Shoe\n")
    (tmp_path / "products-good.xml").write_text(
        "<products><p sku='B' name='Hat' price='12.5' currency='EUR'/></products>"
    )
    bad, good = await pages(connector, "products")
    assert [p.sku for p in good.rows] == ["B"] and good.failed == {}
    assert bad.rows == [] and bad.token is None  # nothing to confirm: it is gone already
    assert list(bad.failed) == ["products-bad.csv"]
    assert "missing column(s): price, currency" in bad.failed["products-bad.csv"]
    assert not (tmp_path / "products-bad.csv").exists()
    assert (tmp_path / "failed" / "products-bad.csv").exists()
    reason = (tmp_path / "failed" / "products-bad.csv.reason").read_text()
    assert "missing column(s): price, currency" in reason
