"""The demo shop renders from the shipped catalogue and shows events as they arrive."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from channels.weblog.demo import load_catalogue
from gateway.config import Config
from gateway.web.app import create_app

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode()}


@pytest.fixture
async def client(
    aiohttp_client: Any, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> Client:
    return await aiohttp_client(create_app(make_config(service_redis_url, prefix)))  # type: ignore[no-any-return]


def test_catalogue_has_products_stores_and_stock() -> None:
    catalogue = load_catalogue()
    assert len(catalogue.products) == 12
    assert set(catalogue.stores) == {"web", "store-1", "store-2"}
    boots = catalogue.products["SKU-1003"]
    assert boots.stock == {"web": 0, "store-1": 2, "store-2": 1}
    assert str(boots.price) == "139.00"


@pytest.mark.parametrize("path", ["/demo/", "/demo/cart", "/demo/checkout", "/demo/signin"])
async def test_pages_carry_the_snippet(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    html = await resp.text()
    assert '<script async src="/t.js?k=demo-write-key"></script>' in html


async def test_product_page_shows_price_stock_and_a_slot(client: Client) -> None:
    html = await (await client.get("/demo/p/SKU-1003")).text()
    assert "Hiking Boots" in html and "139.00 EUR" in html
    assert 'data-touchpoint-slot="product"' in html
    assert "Out of stock online" in html and "disabled" in html
    assert 'data-touchpoint-slot="home"' in await (await client.get("/demo/")).text()
    missing = await client.get("/demo/p/SKU-0000")
    assert (missing.status, (await missing.json())["error"]) == (404, "no such product")


async def test_live_events_list_what_arrived(client: Client) -> None:
    message = {"type": "page", "anonymousId": "visitor-1", "context": {"page": {"path": "/demo/"}}}
    assert (await client.post("/v1/page", json=message, headers=AUTH)).status == 200
    events = await (await client.get("/demo/events?format=json")).json()
    assert [(e["type"], e["who"], e["path"], e["channel"]) for e in events] == [
        ("page", "visitor-1", "/demo/", "web")
    ]
