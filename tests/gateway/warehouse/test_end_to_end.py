"""End to end, on DuckDB and on PostgreSQL: events in over HTTP, through every agent, into the
warehouse; OLAP answers equal counts computed from the input independently; customer 360 and
the privacy API (export, consent, erasure) on the customer the channels built together."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Config
from gateway.datamart import profiles
from gateway.web.app import create_app
from gateway.web.state import ADMIN_TOKEN, BUS, REDIS, WAREHOUSE
from tests.conftest import CHROME_UA
from tests.helpers import eventually

Client = TestClient[web.Request, web.Application]
WRITE = "Basic " + base64.b64encode(b"demo-write-key:").decode()
MOBILE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
VISITORS = 12
PRICES = {"SKU-1": 20.0, "SKU-2": 7.5}


def visit(v: int) -> list[dict[str, Any]]:
    """What one visitor does on the web: pages, product views, an order for every fourth."""
    anon = f"anon-{v}"
    events: list[dict[str, Any]] = [
        {"type": "page", "anonymousId": anon, "messageId": f"{anon}-p{i}",
         "context": {"page": {"path": f"/p/{i}"}}}
        for i in range(3)
    ]  # fmt: skip
    events += [
        {"type": "track", "event": "Product Viewed", "anonymousId": anon,
         "messageId": f"{anon}-v{sku}", "properties": {"sku": sku, "category": "Shoes"}}
        for sku in PRICES
    ]  # fmt: skip
    if v % 4 == 0:
        events.append({
            "type": "track", "event": "Order Completed", "anonymousId": anon,
            "messageId": f"{anon}-o", "properties": {
                "order_id": f"W-{v}", "revenue": 47.5, "currency": "EUR",
                "products": [{"sku": "SKU-1", "price": 20.0, "quantity": 2},
                             {"sku": "SKU-2", "price": 7.5, "quantity": 1}]}})  # fmt: skip
    return events


def expected_web() -> dict[str, float]:
    orders = [v for v in range(VISITORS) if v % 4 == 0]
    return {
        "events": VISITORS * 5 + len(orders),
        "orders": len(orders),
        "revenue": 47.5 * len(orders),
        "units": 3 * len(orders),
    }


async def post(client: Client, path: str, body: dict[str, Any], agent: str = CHROME_UA) -> None:
    resp = await client.post(path, json=body, headers={"Authorization": WRITE, "User-Agent": agent})
    assert resp.status == 200, await resp.text()


async def drained(client: Client) -> bool:
    stats = await client.app[BUS].stats()
    return all(
        g["lag"] == 0 and g["pending"] == 0
        for s in stats["streams"].values()
        for g in s["groups"].values()
    )


async def olap(client: Client, query: str) -> dict[str, Any]:
    token = client.app[ADMIN_TOKEN]
    resp = await client.get(f"/v1/olap?{query}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def by_first_column(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    columns = result["columns"]
    return {row[0]: dict(zip(columns[1:], row[1:], strict=True)) for row in result["rows"]}


@pytest.mark.slow
async def test_channels_to_warehouse_olap_360_and_privacy(
    aiohttp_client: Any,
    make_config: Callable[..., Config],
    service_redis_url: str,
    prefix: str,
    warehouse_section: str,
) -> None:
    config = make_config(
        service_redis_url,
        prefix,
        warehouse_section,
        "[bus]\nblock = 0.05",
        "[collector]\nsession_timeout = 1.0\ntick_interval = 0.2",
    )
    client: Client = await aiohttp_client(create_app(config))
    for v in range(VISITORS):
        await post(client, "/v1/batch", {"batch": visit(v)}, CHROME_UA if v % 2 else MOBILE)
    await post(client, "/v1/batch", {"batch": visit(1)})  # an SDK's retry: all duplicates
    await post(client, "/v1/page", {"anonymousId": "crawler", "messageId": "bot-1"}, BOT)
    # Visitor 0 signs in, then buys in a store with a loyalty card the till links to the e-mail.
    await post(client, "/v1/identify", {"anonymousId": "anon-0", "messageId": "id-0",
                                        "traits": {"email": "Ann@Example.com"}})  # fmt: skip
    await post(client, "/v1/events", {
        "type": "track", "event": "Order Completed", "channel": "pos", "userId": "card-77",
        "messageId": "pos-1", "context": {"traits": {"email": "ann@example.com",
                                                     "loyaltyCard": "77"}},
        "properties": {"order_id": "R-1", "store_id": "store-1", "revenue": 20.0,
                       "products": [{"sku": "SKU-1", "price": 20.0, "quantity": 1}]}})  # fmt: skip

    await eventually(lambda: drained(client), within=60)
    warehouse = client.app[WAREHOUSE]

    async def sessions_loaded() -> bool:
        rows = await warehouse.fetch("SELECT count(*) AS n FROM fact_session")
        return int(rows[0]["n"]) >= VISITORS

    await eventually(sessions_loaded, within=60)

    # OLAP equals what the input says, computed here independently.
    web_expected = expected_web()
    result = by_first_column(
        await olap(client, "measures=events,visitors,orders,revenue,units,sessions&dims=channel")
    )
    assert result["web"]["events"] == web_expected["events"] + 1  # + the identify
    assert result["web"]["orders"] == web_expected["orders"]
    assert result["web"]["revenue"] == pytest.approx(web_expected["revenue"])
    assert result["web"]["units"] == web_expected["units"]
    assert result["web"]["visitors"] == VISITORS  # the bot is not a visitor
    assert result["web"]["sessions"] == VISITORS
    assert (result["pos"]["events"], result["pos"]["orders"], result["pos"]["revenue"]) == (
        1, 1, 20.0)  # fmt: skip
    devices = by_first_column(await olap(client, "measures=events&dims=device_type"))
    mobile_events = sum(len(visit(v)) for v in range(VISITORS) if v % 2 == 0)  # identify: desktop
    assert devices["mobile"]["events"] == mobile_events
    bots = by_first_column(await olap(client, "measures=bot_events,events&dims=channel"))
    assert bots["web"]["bot_events"] == 1  # kept for reports, out of the other measures

    # One customer holds the web visits and the store purchase.
    redis, keys = client.app[REDIS], client.app[BUS].keys
    customer = await profiles.find_customer(redis, keys, "demo", "email", "ann@example.com")
    assert customer
    assert customer == await profiles.find_customer(redis, keys, "demo", "anonymous_id", "anon-0")
    assert customer == await profiles.find_customer(redis, keys, "demo", "loyalty_card", "77")
    profile = await profiles.get_profile(redis, keys, customer)
    assert profile is not None
    assert (profile.counters.orders, profile.counters.revenue) == (2, 67.5)
    channels = await warehouse.fetch(
        "SELECT DISTINCT channel FROM fact_event WHERE customer_id = $1 ORDER BY channel",
        [customer],
    )
    assert [r["channel"] for r in channels] == ["pos", "web"]

    # Customer 360, found by order number.
    login = await client.post(
        "/dashboard/login", data={"token": client.app[ADMIN_TOKEN]}, allow_redirects=False
    )
    assert login.status == 302
    found = await client.get("/dashboard/customers?q=R-1", allow_redirects=False)
    assert found.headers["Location"] == f"/dashboard/customers/{customer}"
    page = await (await client.get(found.headers["Location"])).text()
    assert "email:ann@example.com" in page and "loyalty_card:77" in page
    assert "Order Completed" in page and "store-1" in page

    # Privacy: export, consent, erasure.
    admin = {"Authorization": f"Bearer {client.app[ADMIN_TOKEN]}"}
    export = await (await client.get(f"/v1/customers/{customer}/export", headers=admin)).json()
    assert export["customer_id"] == customer
    assert Counter(r["channel"] for r in export["warehouse"]["fact_event"]) == {"web": 7, "pos": 1}
    (dim,) = export["warehouse"]["dim_customer"]
    assert dim["email_hash"] and "ann@example.com" not in str(dim)
    consent = await client.post(
        f"/v1/customers/{customer}/consent",
        json={"channel": "email", "purpose": "marketing", "granted": False},
        headers=admin,
    )
    assert consent.status == 202

    async def refused() -> bool:
        current = await profiles.get_profile(redis, keys, customer)
        granted = current.consent.get("email:marketing") if current else None
        return granted is not None and granted.granted is False

    await eventually(refused, within=30)
    await eventually(lambda: drained(client), within=60)
    for body in ({"x": 1}, {"channel": "", "purpose": "marketing", "granted": True},
                 {"channel": "   ", "purpose": "marketing", "granted": True},
                 {"channel": "email\u0000", "purpose": "marketing", "granted": True},
                 {"channel": "email", "purpose": "p" * 65, "granted": True}):  # fmt: skip
        bad = await client.post(f"/v1/customers/{customer}/consent", json=body, headers=admin)
        assert bad.status == 400

    erased = await client.delete(f"/v1/customers/{customer}", headers=admin)
    assert erased.status == 200
    assert customer in (await erased.json())["erased"]
    assert (await client.get(f"/v1/customers/{customer}", headers=admin)).status == 404
    left = await warehouse.fetch(
        "SELECT count(*) AS n FROM fact_event WHERE customer_id = $1 OR anonymous_id = 'anon-0'",
        [customer],
    )
    assert left[0]["n"] == 0
    assert (
        await warehouse.fetch("SELECT * FROM dim_customer WHERE customer_id = $1", [customer]) == []
    )
    after = by_first_column(await olap(client, "measures=events,orders&dims=channel"))
    assert after["pos"] == {"events": 1, "orders": 1}  # the facts stay, anonymous
    assert await profiles.find_customer(redis, keys, "demo", "email", "ann@example.com") is None
