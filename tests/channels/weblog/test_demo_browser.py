"""Click through the demo shop in headless Chromium and watch the visit arrive."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest

from gateway import keys as K
from gateway.config import Config
from gateway.events import Event
from gateway.web.state import BUS
from tests.conftest import CHROME_UA, ROOT
from tests.helpers import LiveGateway, eventually

if TYPE_CHECKING:
    from playwright.async_api import Browser

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
async def gateway(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> AsyncIterator[LiveGateway]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"  # the demo shop is served by the gateway itself
    server = LiveGateway(
        make_config(service_redis_url, prefix, sites__demo__allowed_origins=origin)
    )
    server.port = port
    await server.start()
    yield server
    await server.stop()


async def test_a_visit_to_the_demo_shop_arrives_as_one_visitors_events(
    browser: Browser, gateway: LiveGateway
) -> None:
    context = await browser.new_context(user_agent=CHROME_UA)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    await page.goto(gateway.origin + "/demo/")
    await page.click("a[data-sku=SKU-1001]")
    await page.wait_for_selector("text=Trail Running Shoes")
    await page.click("#add")
    await page.click("text=Cart (")
    await page.click("#to-checkout")
    await page.fill("input[name=email]", "Ann@Example.com")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#done:not([hidden])")
    await page.evaluate("touchpoint.flush()")

    async def order_listed() -> bool:
        await page.goto(gateway.origin + "/demo/events")
        rows = await page.locator("#events tbody tr").all_inner_texts()
        return any("Order Completed" in row and "ann@example.com" in row for row in rows)

    await eventually(order_listed)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "demo-live-events.png", full_page=True)
    await context.close()

    entries = await gateway.app[BUS].latest(K.EVENTS, 100)
    events: list[Event] = [e for entry in reversed(entries) for e in entry.events]
    names = [e.name or e.type for e in events]
    for expected in ("Product Viewed", "Product Added", "Cart Viewed", "Checkout Started",
                     "identify", "Order Completed"):  # fmt: skip
        assert expected in names
    order = next(e for e in events if e.name == "Order Completed")
    assert order.user_id == "ann@example.com"
    assert order.properties["revenue"] == 89.9
    assert [p["sku"] for p in order.properties["products"]] == ["SKU-1001"]
    assert len({e.anonymous_id for e in events}) == 1  # one visitor throughout
    assert not any(e.context.get("bot") for e in events)  # a desktop Chrome, every time
    assert errors == []
