"""Events → warehouse fact rows (plain functions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from gateway.agents.facts import EVENT_COLUMNS, SALE_COLUMNS, date_key, fact_records, sale_records
from gateway.events import Event
from tests.helpers import event

ORDER = {
    "order_id": "o-1",
    "revenue": 47.5,
    "currency": "EUR",
    "store_id": "store-1",
    "email": "ann@example.com",
    "products": [
        {"sku": "SKU-1", "category": "Shoes", "price": 20.0, "quantity": 2, "discount": 2.5},
        {"product_id": "SKU-2", "price": 10.0},
        "not a product",
    ],
}


def facts(events: list[Event]) -> dict[str, list[dict[str, Any]]]:
    """The rows each fact table gets, as dicts (none: an empty list)."""
    out: dict[str, list[dict[str, Any]]] = {"fact_event": [], "fact_sale": [], "fact_message": []}
    out.update({records.table: records.dicts() for records in fact_records(events)})
    return out


def sale_rows(order: Event) -> list[dict[str, Any]]:
    return [dict(zip(SALE_COLUMNS, line, strict=True)) for line in sale_records(order)]


def test_an_order_becomes_an_event_and_its_lines() -> None:
    order = event(1, name="Order Completed", properties=ORDER, customer_id="c1", session_id="s1")
    rows = facts([order])
    (fact,) = rows["fact_event"]
    assert (fact["event_id"], fact["customer_id"], fact["session_id"]) == ("e1", "c1", "s1")
    assert fact["revenue"] == 47.5 and fact["store_id"] == "store-1"
    assert "email" not in json.loads(fact["properties"])  # no contact details in the warehouse
    first, second = rows["fact_sale"]
    assert (first["order_id"], first["line_no"], first["sku"], first["revenue"]) == (
        "o-1", 0, "SKU-1", 37.5)  # fmt: skip
    assert (second["sku"], second["quantity"], second["revenue"]) == ("SKU-2", 1.0, 10.0)
    assert first["kind"] == "sale" and first["customer_id"] == "c1"


def test_a_refund_counts_negative() -> None:
    refund = event(2, name="Order Refunded", properties={"order_id": "o-1r", "products": [
        {"sku": "SKU-1", "price": 20.0, "quantity": 1}]})  # fmt: skip
    (line,) = sale_rows(refund)
    assert (line["kind"], line["quantity"], line["revenue"]) == ("return", -1.0, -20.0)


def test_numbers_are_finite_whatever_was_sent() -> None:
    """float("nan") and a product that overflows once went into the warehouse as NaN and
    Infinity, and /v1/olap then answered JSON no parser takes."""
    products = [{"sku": "N", "quantity": "nan", "price": "1"},
                {"sku": "B", "quantity": 1e308, "price": 1e308, "discount": "-inf"}]  # fmt: skip
    properties = {"order_id": "o-4", "revenue": "inf", "products": products}
    order = event(4, name="Order Completed", properties=properties)
    nan, big = sale_rows(order)
    assert (nan["quantity"], nan["revenue"]) == (1.0, 1.0)  # no quantity: one
    assert (big["quantity"], big["unit_price"], big["revenue"]) == (1.0, 0.0, 0.0)
    (fact,) = facts([order])["fact_event"]
    assert fact["revenue"] is None


def test_orders_without_id_or_products_have_no_lines() -> None:
    assert sale_rows(event(3, name="Order Completed", properties={"products": []})) == []
    assert sale_rows(event(4, name="Order Completed", properties={"order_id": "x"})) == []
    assert sale_rows(event(5, name="Product Viewed", properties=ORDER)) == []


def test_message_outcomes_and_bots() -> None:
    opened = event(6, name="Email Opened", channel="email", properties={"campaign_id": "spring"})
    bot = event(7, context={"bot": True, "userAgentData": {"deviceType": "bot", "browser": "X"}})
    rows = facts([opened, bot])
    (message,) = rows["fact_message"]
    assert (message["status"], message["campaign_id"], message["channel"]) == (
        "opened", "spring", "email")  # fmt: skip
    bot_row = rows["fact_event"][1]
    assert bot_row["is_bot"] is True and bot_row["device_type"] == "bot"
    assert rows["fact_event"][0]["is_bot"] is False


def test_date_key() -> None:
    assert date_key(datetime(2026, 3, 9, 23, 59, tzinfo=UTC)) == 20260309


def test_records_are_the_rows_in_column_order() -> None:
    order = event(8, name="Order Completed", properties=ORDER, customer_id="c1")
    opened = event(9, name="Email Opened", channel="email", properties={"raw": b"\x00"})
    batch = [order, opened, event(10)]
    loads = {r.table: r for r in fact_records(batch)}
    assert set(loads) == {"fact_event", "fact_sale", "fact_message"}
    assert loads["fact_event"].columns == EVENT_COLUMNS
    assert [r["event_id"] for r in loads["fact_event"].dicts()] == ["e8", "e9", "e10"]
    assert [r["sku"] for r in loads["fact_sale"].dicts()] == ["SKU-1", "SKU-2"]
    assert json.loads(loads["fact_event"].dicts()[1]["properties"]) == {"raw": "AA=="}
    assert fact_records([]) == []
