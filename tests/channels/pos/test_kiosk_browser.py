"""The kiosk in headless Chromium: a known customer scans their card on the on-screen keypad,
sees offers in stock at this store, looks a product up, takes a coupon, walks away; the
screen returns to idle with nothing of them left. Screenshots under test-artifacts/."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp
import pytest

from gateway import keys as K
from gateway.config import Config
from gateway.datamart.profiles import find_customer, get_profile
from gateway.erp import stock
from gateway.events import Event
from gateway.web.state import BUS, REDIS, WAREHOUSE
from tests.channels.pos.test_kiosk import ENV, KIOSKS_TOML, TOKEN
from tests.conftest import CHROME_UA, ROOT
from tests.helpers import LiveGateway, eventually

if TYPE_CHECKING:
    from playwright.async_api import Browser

ARTIFACTS = ROOT / "test-artifacts"
WRITE = {
    "Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode(),
    "User-Agent": CHROME_UA,
}
CARD = "5551234"
ANN = "ann@example.com"


@pytest.fixture
async def gateway(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> AsyncIterator[LiveGateway]:
    config = make_config(
        service_redis_url,
        prefix,
        "[bus]\nblock = 0.05",
        "[collector]\ntick_interval = 0.2",
        "[pos]\nkiosk_idle = 3.0",
        KIOSKS_TOML,
        erp__files__seed_demo="true",
        **ENV,
    )
    server = LiveGateway(config)
    await server.start()
    yield server
    await server.stop()


async def drained(gateway: LiveGateway) -> bool:
    stats = await gateway.app[BUS].stats()
    groups = [g for s in stats["streams"].values() for g in s["groups"].values()]
    return all(g["lag"] == 0 and g["pending"] == 0 for g in groups)


async def make_ann(gateway: LiveGateway) -> None:
    """Ann signs in on the web with her card, looks at rain jackets a lot, buys a T-shirt."""
    anon = "visitor-ann"
    viewed = ["SKU-2001", "SKU-2001", "SKU-2003", "SKU-2001"]  # newest last
    batch = [
        {"type": "identify", "anonymousId": anon,
         "traits": {"email": ANN, "firstName": "Ann", "loyaltyCard": CARD}},
        *({"type": "track", "event": "Product Viewed", "anonymousId": anon,
           "properties": {"sku": sku, "category": "Clothing"}} for sku in viewed),
        {"type": "track", "event": "Order Completed", "anonymousId": anon,
         "properties": {"order_id": "O-1", "revenue": 45.0, "products": [
             {"sku": "SKU-2002", "category": "Clothing", "price": 45.0, "quantity": 1}]}},
    ]  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.origin + "/v1/batch", json={"batch": batch}, headers=WRITE) as resp,
    ):
        assert resp.status == 200
    app = gateway.app
    redis, keys = app[REDIS], app[BUS].keys

    async def ready() -> bool:
        customer = await find_customer(redis, keys, "demo", "loyalty_card", CARD)
        profile = await get_profile(redis, keys, customer) if customer else None
        products = await app[WAREHOUSE].fetch("SELECT count(*) AS n FROM dim_product")
        return bool(
            profile
            and len(profile.viewed) >= 2
            and profile.bought
            and products[0]["n"] == 12
            and await stock.last_sync(redis, keys)
            and await drained(gateway)
        )

    await eventually(ready, within=60)
    # The item Ann scores highest (three views, her favourite category) is out of stock here.
    assert not await stock.in_stock(redis, keys, "SKU-2001", "store-1")
    assert await stock.in_stock(redis, keys, "SKU-2001", "store-2")


async def kiosk_events(gateway: LiveGateway) -> list[Event]:
    entries = await gateway.app[BUS].latest(K.EVENTS, 200)
    return [e for entry in reversed(entries) for e in entry.events if e.channel == "kiosk"]


async def test_a_customer_at_the_kiosk(browser: Browser, gateway: LiveGateway) -> None:
    await make_ann(gateway)
    context = await browser.new_context(
        user_agent=CHROME_UA, viewport={"width": 1280, "height": 1000}, has_touch=True
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    answers: list[str] = []

    async def record(response: object) -> None:
        if "/v1/kiosk/" in response.url:  # type: ignore[attr-defined]
            answers.append(await response.text())  # type: ignore[attr-defined]

    page.on("response", record)
    ARTIFACTS.mkdir(exist_ok=True)

    await page.goto(f"{gateway.origin}/kiosk/store-1?token={TOKEN}")
    await page.wait_for_selector("#idle:not([hidden])")
    assert "token" not in page.url  # kept in localStorage, out of the address bar
    await page.screenshot(path=ARTIFACTS / "kiosk-idle.png")

    for digit in CARD:
        await page.click(f"#keypad [data-key='{digit}']")
    assert await page.inner_text("#card") == CARD
    await page.click("#key-ok")
    await page.wait_for_selector("#customer:not([hidden])")
    assert await page.inner_text("#greeting") == "Hello Ann, welcome back!"
    offers = [await li.get_attribute("data-sku") for li in await page.locator("#offers li").all()]
    assert offers and offers[0] == "SKU-2003"  # Clothing, viewed, in stock here
    assert "SKU-2001" not in offers  # her favourite, but none in this store
    assert "SKU-2002" not in offers  # bought already
    redis, keys = gateway.app[REDIS], gateway.app[BUS].keys
    for sku in offers:
        assert await stock.in_stock(redis, keys, str(sku), "store-1")

    await page.click("button[data-send=screen]")
    await page.wait_for_selector("#coupon .coupon")
    await page.click("button[data-send=email]")
    await page.wait_for_selector("#coupon .sent")
    await page.screenshot(path=ARTIFACTS / "kiosk-customer.png", full_page=True)

    await page.click("#search-open")
    for key in "rain":
        await page.click(f".keyboard[data-target=q] [data-key='{key}']")
    await page.click("#search-go")
    row = page.locator("#results tr[data-sku=SKU-2001]")
    await row.wait_for()
    cells = await row.locator("td").all_inner_texts()
    assert cells == ["Rain Jacket", "119.00 EUR", "0", "Touchpoint Outdoor Grenoble: 4"]
    await page.screenshot(path=ARTIFACTS / "kiosk-search.png", full_page=True)

    # Nobody touches the screen: back to idle, with nothing of Ann left.
    await page.wait_for_selector("#idle:not([hidden])", timeout=15_000)
    body = await page.inner_text("body")
    html = await page.content()
    for trace in ("Ann", "Rain Jacket", "Fleece", CARD):
        assert trace not in body and trace not in html
    assert await page.locator("#offers li, #results tbody tr, #coupon *").count() == 0
    storage = await page.evaluate("Object.keys(localStorage).concat(Object.keys(sessionStorage))")
    assert storage == ["tp_kiosk_token:store-1"]
    await page.screenshot(path=ARTIFACTS / "kiosk-after-idle.png")

    async def ended() -> list[Event]:
        return [e for e in await kiosk_events(gateway) if e.name == "Kiosk Session Ended"]

    (end,) = await eventually(ended)
    assert end.properties["reason"] == "idle"
    events = await kiosk_events(gateway)
    names = [e.name for e in events]
    for name in ("Kiosk Session Started", "Product Searched", "Coupon Issued"):
        assert name in names
    assert all(e.channel == "kiosk" and e.site == "demo" for e in events)
    assert len({e.anonymous_id for e in events}) == 1  # one session throughout
    sends = [e.properties["send_by"] for e in events if e.name == "Coupon Issued"]
    assert sends == ["screen", "email"]

    customer = await find_customer(redis, keys, "demo", "loyalty_card", CARD)
    assert answers and customer
    for answer in answers:  # a name, offers and coupons: never who else she is
        assert ANN not in answer and customer not in answer and "visitor-ann" not in answer
    await context.close()
    assert errors == []
