"""The kiosk's API on the real app (both warehouse engines), its device tokens and its
recommendations (plain functions)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from channels.pos import kiosk as kiosk_module
from channels.pos.kiosk import candidates, first_name, kiosks, recommend
from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.config import Config
from gateway.datamart.profiles import Counters, Item, Profile, Trait
from gateway.errors import ConfigError
from gateway.events import Event
from gateway.web.app import create_app
from gateway.web.state import BUS, REDIS, WAREHOUSE
from tests.gateway.warehouse.conftest import (  # noqa: F401  (fixtures)
    engine,
    pg_dsn,
    warehouse_section,
)
from tests.helpers import raw_http

Client = TestClient[web.Request, web.Application]

TOKEN = "kiosk-one-token"
OTHER = "kiosk-two-token"
KIOSKS_TOML = """
[stores.store-1]
site = "demo"
name = "Touchpoint Outdoor Lyon"

[stores.store-1.kiosks.kiosk-1]
token = { env = "TOUCHPOINT_KIOSK1_TOKEN" }

[stores.store-2]
site = "demo"

[stores.store-2.kiosks.kiosk-2]
token = { env = "TOUCHPOINT_KIOSK2_TOKEN" }
"""
ENV = {"kiosk1_token": TOKEN, "kiosk2_token": OTHER}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def config(
    make_config: Callable[..., Config],
    service_redis_url: str,
    prefix: str,
    warehouse_section: str,  # noqa: F811
) -> Config:
    return make_config(
        service_redis_url,
        prefix,
        warehouse_section,
        KIOSKS_TOML,
        "[agents]\nrun = []",
        erp__files__seed_demo="true",
        **ENV,
    )


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> Client:
    client: Client = await aiohttp_client(create_app(config))
    app = client.app
    ctx = AgentContext(config, app[REDIS], app[BUS].keys, app[BUS], app[WAREHOUSE])
    await AGENTS["erp"].make(ctx).tick()  # type: ignore[attr-defined]  # the demo catalogue
    return client


async def kiosk_events(client: Client) -> list[Event]:
    entries = await client.app[BUS].latest(K.EVENTS, 100)
    return [e for entry in reversed(entries) for e in entry.events if e.channel == "kiosk"]


async def test_a_kiosk_token_is_required_and_bound_to_its_store(client: Client) -> None:
    body = {"card": "4242"}
    resp = await client.post("/v1/kiosk/store-1/identify", json=body)
    assert resp.status == 401 and "error" in await resp.json()
    resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=bearer("wrong"))
    assert resp.status == 401
    assert (await client.get("/v1/kiosk/store-1/products?q=a", headers=bearer("x"))).status == 401
    resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=bearer(OTHER))
    assert resp.status == 403 and "another store" in (await resp.json())["error"]
    resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=bearer(TOKEN))
    assert resp.status == 200


async def test_an_unknown_card_gets_a_generic_welcome_and_in_stock_offers(client: Client) -> None:
    for body in ({"card": "0000-unknown"}, {"email": "nobody@example.com"}):
        resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=bearer(TOKEN))
        assert resp.status == 200
        text = await resp.text()
        assert "nobody@example.com" not in text
        data = await resp.json()
        assert data["greeting"] == "Welcome to Touchpoint Outdoor Lyon!"
        assert data["first_name"] is None and data["known"] is False
        assert data["send_by"] == ["screen"]
        assert len(data["offers"]) == 6
        assert all(p["here"] > 0 for p in data["offers"])
        # What store-1 holds most of, first (non-personal).
        assert [p["sku"] for p in data["offers"]][:2] == ["SKU-4001", "SKU-4003"]
    started = [e for e in await kiosk_events(client) if e.name == "Kiosk Session Started"]
    assert len(started) == 2 and all(e.site == "demo" for e in started)
    assert all("traits" not in e.context for e in started)  # an unknown card joins no one


async def test_stale_stock_offers_nothing_unless_trusted(client: Client, config: Config) -> None:
    """The ERP has not confirmed the stock for longer than erp.stale_after: with the default
    policy (``skip``) no offer claims it is here."""
    redis, keys = client.app[REDIS], client.app[BUS].keys
    old = datetime.now(UTC).timestamp() - config.erp.stale_after - 1
    await redis.hset(keys.erp_status(), "stock.synced_at", repr(old))
    body = {"card": "0000-unknown"}
    resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=bearer(TOKEN))
    assert resp.status == 200 and (await resp.json())["offers"] == []
    await redis.hset(keys.erp_status(), "stock.synced_at", repr(old + 60))  # fresh again
    resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=bearer(TOKEN))
    assert len((await resp.json())["offers"]) == 6


async def test_bad_requests_name_the_problem(client: Client) -> None:
    headers = bearer(TOKEN)
    resp = await client.post("/v1/kiosk/store-1/identify", json={}, headers=headers)
    assert resp.status == 400
    resp = await client.post("/v1/kiosk/store-1/identify", json={"pin": 1}, headers=headers)
    assert resp.status == 400
    resp = await client.post("/v1/kiosk/store-1/coupon", json={"session": "gone"}, headers=headers)
    assert resp.status == 404
    assert (await client.get("/v1/kiosk/store-1/products", headers=headers)).status == 400
    assert (await client.get("/kiosk/nowhere")).status == 404
    head = b"GET /v1/kiosk/store-1/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff"
    status, body = await raw_http(client.port, head)  # a byte that is not UTF-8: once a 500
    assert status == 401 and b"kiosk token required" in body


async def test_a_discontinued_product_is_neither_offered_nor_found(
    client: Client, config: Config
) -> None:
    headers, body = bearer(TOKEN), {"card": "0000-unknown"}
    resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=headers)
    assert (await resp.json())["offers"][0]["sku"] == "SKU-4001"  # what store-1 holds most of
    (config.erp_drop_dir / "products-discontinued.csv").write_text(
        "sku,name,price,currency,active\nSKU-4001,Steel Water Bottle,24.00,EUR,false\n"
    )
    app = client.app
    ctx = AgentContext(config, app[REDIS], app[BUS].keys, app[BUS], app[WAREHOUSE])
    erp: Any = AGENTS["erp"].make(ctx)
    assert (await erp.sync.sync("products")).rows == 1
    resp = await client.post("/v1/kiosk/store-1/identify", json=body, headers=headers)
    offers = [p["sku"] for p in (await resp.json())["offers"]]
    assert len(offers) == 6 and "SKU-4001" not in offers
    resp = await client.get("/v1/kiosk/store-1/products?q=sku-4001", headers=headers)
    assert (await resp.json())["results"] == []


async def test_search_coupon_and_end(client: Client) -> None:
    headers = bearer(TOKEN)
    resp = await client.post("/v1/kiosk/store-1/identify", json={"card": "1"}, headers=headers)
    session = (await resp.json())["session"]

    resp = await client.get(f"/v1/kiosk/store-1/products?q=RAIN&session={session}", headers=headers)
    data = await resp.json()
    assert [p["sku"] for p in data["results"]] == ["SKU-2001"]
    jacket = data["results"][0]
    assert (jacket["price"], jacket["here"], jacket["elsewhere"]) == (119.0, 0.0, {"store-2": 4.0})
    assert data["stores"]["store-2"] == "Touchpoint Outdoor Grenoble"
    resp = await client.get("/v1/kiosk/store-1/products?q=sku-100", headers=headers)
    assert len((await resp.json())["results"]) == 3

    body = {"session": session, "send_by": "email"}
    resp = await client.post("/v1/kiosk/store-1/coupon", json=body, headers=headers)
    assert resp.status == 400  # no e-mail known for an unknown card
    body = {"session": session, "send_by": "screen"}
    resp = await client.post("/v1/kiosk/store-1/coupon", json=body, headers=headers)
    assert resp.status == 200 and (await resp.json())["coupon"].startswith("K")

    resp = await client.post("/v1/kiosk/store-2/end", json={"session": session}, headers=headers)
    assert resp.status == 403
    resp = await client.post("/v1/kiosk/store-1/end", json={"session": session}, headers=headers)
    assert (await resp.json())["ended"] is True
    resp = await client.post("/v1/kiosk/store-1/end", json={"session": session}, headers=headers)
    assert (await resp.json())["ended"] is False
    assert not await client.app[REDIS].exists(client.app[BUS].keys.kiosk_session(session))

    names = [e.name for e in await kiosk_events(client)]
    assert names == ["Kiosk Session Started", "Product Searched", "Product Searched",
                     "Coupon Issued", "Kiosk Session Ended"]  # fmt: skip
    events = await kiosk_events(client)
    assert {e.anonymous_id for e in events if e.properties.get("query") != "sku-100"} == {
        f"ks-{session}"
    }


def test_a_kiosk_without_a_token_gets_one_per_run(
    make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config("", "tp", KIOSKS_TOML, kiosk2_token=OTHER)
    found = kiosks(config)
    assert found["kiosk-2"].token == OTHER
    assert len(found["kiosk-1"].token) >= 24
    assert f"/kiosk/store-1?token={found['kiosk-1'].token}" in caplog.text
    assert found["kiosk-1"].token != kiosks(config)["kiosk-1"].token


def test_kiosk_ids_are_unique_across_stores(make_config: Callable[..., Config]) -> None:
    twice = KIOSKS_TOML + '\n[stores.store-2.kiosks.kiosk-1]\ntoken = "x"\n'
    with pytest.raises(ConfigError, match=r"stores\.store-2\.kiosks\.kiosk-1"):
        make_config("", "tp", twice)


# --- recommendations without I/O -----------------------------------------------------------------

NOW = datetime(2026, 3, 2, tzinfo=UTC)
CATALOGUE = [
    {"sku": "A", "name": "A", "category": "Clothing", "price": 10, "currency": "EUR"},
    {"sku": "B", "name": "B", "category": "Clothing", "price": 10, "currency": "EUR"},
    {"sku": "C", "name": "C", "category": "Clothing", "price": 10, "currency": "EUR"},
    {"sku": "D", "name": "D", "category": "Bags", "price": 10, "currency": "EUR"},
    {"sku": "E", "name": "E", "category": None, "price": 10, "currency": "EUR"},
]


def profile(**fields: Any) -> Profile:
    return Profile(customer_id="c_1", site="demo", counters=Counters(), **fields)


def test_recommend_scores_interests_and_views_and_keeps_what_is_here() -> None:
    ann = profile(
        interests={"Clothing": 5.0, "Bags": 1.0},
        viewed=[Item("A", NOW), Item("D", NOW), Item("C", NOW)],
        bought=[Item("B", NOW)],
    )
    here = {"A": 0.0, "B": 3.0, "C": 2.0, "D": 1.0, "E": 9.0}
    # A scores highest but is out of stock here; B was bought.
    assert [p["sku"] for p in recommend(CATALOGUE, ann, here, 10)] == ["C", "D", "E"]
    assert [p["sku"] for p in recommend(CATALOGUE, ann, here, 1)] == ["C"]
    # Nobody: what the store holds most of.
    assert [p["sku"] for p in recommend(CATALOGUE, None, here, 2)] == ["E", "B"]


def test_first_name_only() -> None:
    trait = lambda v: Trait(v, NOW, "web")  # noqa: E731
    assert first_name(None) is None
    assert first_name(profile(traits={"firstName": trait("Ann")})) == "Ann"
    assert first_name(profile(traits={"name": trait("Ann Smith")})) == "Ann"
    assert first_name(profile(traits={"email": trait("ann@example.com")})) is None


async def test_candidates_reach_past_the_best_stocked_for_a_known_customer(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large catalogue is never read whole: what the store holds most of, plus what it has
    in the customer's categories or recent views."""
    monkeypatch.setattr(kiosk_module, "MAX_CANDIDATES", 2)
    warehouse = client.app[WAREHOUSE]
    top = await candidates(warehouse, "store-1", None)
    assert [p["sku"] for p in top] == ["SKU-4001", "SKU-4003"]  # 30 and 25 units
    hiker = Profile(
        customer_id="c1",
        site="demo",
        counters=Counters(),
        interests={"Footwear": 3.0},
        viewed=[Item(product_id="SKU-2003", at=datetime.now(UTC))],
    )
    found = [p["sku"] for p in await candidates(warehouse, "store-1", hiker)]
    # The two best-stocked, then the two best-stocked here among shoes and the viewed fleece.
    assert found == ["SKU-4001", "SKU-4003", "SKU-2003", "SKU-1001"]
