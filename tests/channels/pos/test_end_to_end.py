"""A web visitor who signed in with an e-mail and a loyalty card buys in a store: one customer
holds both, and ``fact_sale`` has the store (the default agents, a DuckDB warehouse)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Config
from gateway.datamart import profiles
from gateway.web.app import create_app
from gateway.web.state import BUS, REDIS, WAREHOUSE
from tests.channels.pos.common import ENV, STORES, encode, signed, txn
from tests.conftest import CHROME_UA
from tests.helpers import eventually

Client = TestClient[web.Request, web.Application]
WRITE = "Basic " + base64.b64encode(b"demo-write-key:").decode()


async def drained(client: Client) -> bool:
    stats = await client.app[BUS].stats()
    return all(
        g["lag"] == 0 and g["pending"] == 0
        for s in stats["streams"].values()
        for g in s["groups"].values()
    )


@pytest.mark.slow
async def test_store_basket_joins_the_web_visitor(
    aiohttp_client: Any, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> None:
    config = make_config(
        service_redis_url,
        prefix,
        '[warehouse]\nengine = "duckdb"\nreaders = 2',
        "[bus]\nblock = 0.05",
        STORES,
        **ENV,
    )
    client: Client = await aiohttp_client(create_app(config))
    identify = {"anonymousId": "anon-1", "messageId": "web-id-1",
                "traits": {"email": "Ann@Example.com", "loyaltyCard": "77"}}  # fmt: skip
    resp = await client.post(
        "/v1/identify", json=identify, headers={"Authorization": WRITE, "User-Agent": CHROME_UA}
    )
    assert resp.status == 200, await resp.text()
    for receipt, kind in (("R-1", "sale"), ("R-2", "return")):
        body = encode(txn(receipt, kind=kind, loyalty_card="77"))
        resp = await client.post("/v1/pos/transactions", data=body, headers=signed(body))
        assert resp.status == 200, await resp.text()
    # Another till sale paid by a customer known only by the e-mail.
    body = encode(txn("R-3", email="ann@example.com"))
    assert (
        await client.post("/v1/pos/transactions", data=body, headers=signed(body))
    ).status == 200

    await eventually(lambda: drained(client), within=60)
    redis, keys = client.app[REDIS], client.app[BUS].keys
    customer = await profiles.find_customer(redis, keys, "demo", "email", "ann@example.com")
    assert customer
    assert customer == await profiles.find_customer(redis, keys, "demo", "loyalty_card", "77")
    assert customer == await profiles.find_customer(redis, keys, "demo", "anonymous_id", "anon-1")
    profile = await profiles.get_profile(redis, keys, customer)
    assert profile is not None  # two sales and one return of the first
    assert (profile.counters.orders, profile.counters.revenue) == (2, 24.5)
    warehouse = client.app[WAREHOUSE]

    async def sales() -> list[dict[str, Any]]:
        return await warehouse.fetch(
            "SELECT order_id, line_no, store_id, channel, customer_id, kind, revenue "
            "FROM fact_sale ORDER BY order_id, line_no"
        )

    rows = await eventually(lambda: _six(sales()), within=60)
    assert {(r["store_id"], r["channel"], r["customer_id"]) for r in rows} == {
        ("store-1", "pos", customer)}  # fmt: skip
    revenue = {(r["order_id"], r["kind"]): 0.0 for r in rows}
    for r in rows:
        revenue[(r["order_id"], r["kind"])] += r["revenue"]
    assert revenue == {
        ("store-1:till-1:R-1", "sale"): 24.5,
        ("store-1:till-1:R-2", "return"): -24.5,
        ("store-1:till-1:R-3", "sale"): 24.5,
    }


async def _six(rows: Any) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = await rows
    return found if len(found) == 6 else None
