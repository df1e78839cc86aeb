"""``/v1/pos/transactions`` and ``/v1/pos/batch`` on the real app and a real Redis."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Config
from gateway.events import Event
from gateway.keys import EVENTS
from gateway.web.app import create_app
from gateway.web.state import BUS
from tests.channels.pos.common import ENV, NEXT_KEY, STORES, encode, signed, txn

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def pos(
    aiohttp_client: Any, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> Client:
    config = make_config(service_redis_url, prefix, "[agents]\nrun = []", STORES, **ENV)
    client: Client = await aiohttp_client(create_app(config))
    return client


async def stored(client: Client) -> list[Event]:
    entries = await client.app[BUS].latest(EVENTS, 1000)
    return [event for entry in reversed(entries) for event in entry.events]


async def test_a_signed_sale_becomes_order_completed(pos: Client) -> None:
    body = encode(txn(loyalty_card="77", email="Ann@Example.com"))
    resp = await pos.post("/v1/pos/transactions", data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["duplicate"] is False and answer["order_id"] == "store-1:till-1:R-1"
    (event,) = await stored(pos)
    assert (event.type, event.name, event.channel, event.site) == (
        "track", "Order Completed", "pos", "demo")  # fmt: skip
    assert event.event_id == answer["event_id"]
    assert event.anonymous_id == "lc-77"
    assert event.context["traits"] == {"loyaltyCard": "77", "email": "ann@example.com"}
    props = event.properties
    assert (props["store_id"], props["terminal_id"], props["tender"]) == (
        "store-1",
        "till-1",
        "card",
    )
    assert (props["revenue"], props["currency"], props["loyalty_card"]) == (24.5, "EUR", "77")
    assert props["products"][0] == {"sku": "SKU-1", "quantity": 2, "price": 10.0, "discount": 1.0}
    assert event.timestamp.isoformat() == "2026-03-02T09:15:00+00:00"


async def test_a_retry_counts_once_and_answers_the_same(pos: Client) -> None:
    body = encode(txn())
    first = await pos.post("/v1/pos/transactions", data=body, headers=signed(body))
    retry = await pos.post("/v1/pos/transactions", data=body, headers=signed(body))
    assert (first.status, retry.status) == (200, 200)
    one, two = await first.json(), await retry.json()
    assert two == {**one, "duplicate": True}
    assert len(await stored(pos)) == 1


async def test_both_keys_of_a_rotation_are_valid(pos: Client) -> None:
    for receipt, key in (("R-1", "till-one-current-key"), ("R-2", NEXT_KEY)):
        body = encode(txn(receipt))
        resp = await pos.post("/v1/pos/transactions", data=body, headers=signed(body, key=key))
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(
    "case",
    ["tampered", "old", "future", "wrong key", "unknown terminal", "keyless terminal", "missing"],
)
async def test_refused_signatures(pos: Client, case: str) -> None:
    body = encode(txn())
    headers = signed(body)
    if case == "tampered":
        body = encode(txn(total=1.0))
    elif case == "old":
        headers = signed(body, timestamp=int(time.time()) - 301)
    elif case == "future":
        headers = signed(body, timestamp=int(time.time()) + 301)
    elif case == "wrong key":
        headers = signed(body, key="not-the-key")
    elif case == "unknown terminal":
        headers = signed(body, terminal="till-9")
    elif case == "keyless terminal":
        headers = signed(body, terminal="till-2")
    else:
        del headers["X-Touchpoint-Nonce"]
    resp = await pos.post("/v1/pos/transactions", data=body, headers=headers)
    assert resp.status == 401
    assert "error" in await resp.json()
    assert await stored(pos) == []


async def test_a_replayed_nonce_is_refused(pos: Client) -> None:
    body = encode(txn())
    headers = signed(body)
    assert (await pos.post("/v1/pos/transactions", data=body, headers=headers)).status == 200
    replay = await pos.post("/v1/pos/transactions", data=body, headers=headers)
    assert replay.status == 401
    assert "nonce" in (await replay.json())["error"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"total": "12"}, "total"),
        ({"lines": [{"sku": "A", "quantity": 0, "unit_price": 1}]}, "lines[0].quantity"),
        ({"lines": [{"sku": "A", "quantity": 1e30, "unit_price": 1}]}, "lines[0].quantity"),
        ({"lines": [{"sku": "A", "quantity": 1, "unit_price": 1e308}]}, "lines[0].unit_price"),
        ({"time": "1999-12-31T23:00:00Z"}, "time"),
        ({"time": "0001-01-01T00:00:00+01:00"}, "time"),
        ({"time": "9999-12-31T00:00:00"}, "time"),  # store time, west of UTC
        ({"lines": [{"quantity": 1, "unit_price": 1}]}, "lines[0].sku"),
        ({"lines": []}, "lines"),
        ({"tender": "shells"}, "tender"),
        ({"colour": "red"}, "colour"),
        ({"store": "store-2"}, "store"),
        ({"terminal": "till-2"}, "terminal"),
        ({"email": "not-an-address"}, "email"),
    ],
)
async def test_invalid_transactions_name_the_field(
    pos: Client, fields: dict[str, Any], field: str
) -> None:
    body = encode(txn(**fields))
    resp = await pos.post("/v1/pos/transactions", data=body, headers=signed(body))
    assert resp.status == 400
    assert (await resp.json())["field"] == field


async def test_returns_and_voids(pos: Client) -> None:
    for receipt, kind in (("R-1", "sale"), ("R-2", "return"), ("R-3", "void")):
        body = encode(txn(receipt, kind=kind, original_receipt=None if kind == "sale" else "R-1"))
        resp = await pos.post("/v1/pos/transactions", data=body, headers=signed(body))
        assert resp.status == 200, await resp.text()
    sale, refund, void = await stored(pos)
    assert (sale.name, refund.name, void.name) == (
        "Order Completed", "Order Refunded", "Order Voided")  # fmt: skip
    assert refund.properties["revenue"] == -24.5
    assert refund.properties["original_order_id"] == "store-1:till-1:R-1"
    assert len({sale.event_id, refund.event_id, void.event_id}) == 3


async def test_a_batch_keeps_valid_lines_and_names_bad_ones(pos: Client) -> None:
    lines = [
        encode(txn("B-1")),
        b"{not json",
        encode(txn("B-2", lines=[])),
        b"",
        encode(txn("B-3", kind="return")),
        encode(txn("B-4", terminal="till-2")),
    ]
    body = b"\n".join(lines) + b"\n"
    headers = {**signed(body, "/v1/pos/batch"), "Content-Encoding": "gzip"}
    resp = await pos.post("/v1/pos/batch", data=gzip.compress(body), headers=headers)
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    assert [(r["line"], r["field"]) for r in answer["rejected"]] == [
        (2, None), (3, "lines"), (6, "terminal")]  # fmt: skip
    assert [e.properties["receipt"] for e in await stored(pos)] == ["B-1", "B-3"]
    # The till uploads its backlog again: nothing new.
    again = await pos.post("/v1/pos/batch", data=body, headers=signed(body, "/v1/pos/batch"))
    assert (await again.json())["duplicates"] == 2
    assert len(await stored(pos)) == 2


async def test_a_batch_with_nothing_valid_is_a_400(pos: Client) -> None:
    body = b"{}\n[]\n"
    resp = await pos.post("/v1/pos/batch", data=body, headers=signed(body, "/v1/pos/batch"))
    assert resp.status == 400
    assert [r["line"] for r in (await resp.json())["rejected"]] == [1, 2]
