"""The dashboard in headless Chromium, with data: overview, OLAP explorer, customer 360, agents;
no console errors; screenshots saved under test-artifacts/."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import aiohttp
import pytest

from gateway.config import Config
from gateway.web.state import ADMIN_TOKEN, BUS
from tests.conftest import CHROME_UA, ROOT
from tests.helpers import LiveGateway, eventually

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

ARTIFACTS = ROOT / "test-artifacts"
WRITE = {
    "Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode(),
    "User-Agent": CHROME_UA,
}


@pytest.fixture
async def gateway(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> AsyncIterator[LiveGateway]:
    config = make_config(
        service_redis_url,
        prefix,
        "[bus]\nblock = 0.05",
        "[collector]\nsession_timeout = 1.0\ntick_interval = 0.2",
    )
    server = LiveGateway(config)
    await server.start()
    yield server
    await server.stop()


async def feed(gateway: LiveGateway) -> None:
    batch = []
    for v in range(6):
        anon = f"visitor-{v}"
        batch += [
            {"type": "page", "anonymousId": anon, "context": {"page": {"path": "/"}}},
            {"type": "track", "event": "Product Viewed", "anonymousId": anon,
             "properties": {"sku": "SKU-1001", "category": "Footwear"}},
            {"type": "track", "event": "Order Completed", "anonymousId": anon,
             "properties": {"order_id": f"O-{v}", "revenue": 89.9, "products": [
                 {"sku": "SKU-1001", "category": "Footwear", "price": 89.9, "quantity": 1}]}},
        ]  # fmt: skip
    batch.append(
        {"type": "identify", "anonymousId": "visitor-0", "traits": {"email": "zoe@example.com"}}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.origin + "/v1/batch", json={"batch": batch}, headers=WRITE) as resp,
    ):
        assert resp.status == 200

    async def loaded() -> bool:
        stats = await gateway.app[BUS].stats()
        groups = [g for s in stats["streams"].values() for g in s["groups"].values()]
        return all(g["lag"] == 0 and g["pending"] == 0 for g in groups)

    await eventually(loaded, within=60)


async def open_signed_in(browser: Browser, gateway: LiveGateway, errors: list[str]) -> Page:
    context = await browser.new_context(
        user_agent=CHROME_UA, viewport={"width": 1280, "height": 900}
    )
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.on(
        "console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None
    )
    await page.goto(gateway.origin + "/dashboard/olap")
    assert "/dashboard/login" in page.url  # signed out: sent to the form, back afterwards
    await page.fill("input[name=token]", gateway.app[ADMIN_TOKEN])
    await page.click("button[type=submit]")
    await page.wait_for_url("**/dashboard/olap")
    return page


async def test_dashboard_pages_with_data(browser: Browser, gateway: LiveGateway) -> None:
    await feed(gateway)
    errors: list[str] = []
    page = await open_signed_in(browser, gateway, errors)
    ARTIFACTS.mkdir(exist_ok=True)

    await page.wait_for_selector("#result tbody tr")
    await page.wait_for_selector("#chart canvas")
    rows = await page.locator("#result tbody tr").all_inner_texts()
    assert any("539.4" in row for row in rows)  # six orders of 89.90
    assert (await page.get_attribute("#csv", "href") or "").endswith("format=csv")
    await page.screenshot(path=ARTIFACTS / "dashboard-olap.png", full_page=True)

    await page.goto(gateway.origin + "/dashboard/")
    await page.wait_for_selector("#live canvas")
    await eventually(lambda: _tile(page, "orders", "6"))
    await page.screenshot(path=ARTIFACTS / "dashboard-overview.png", full_page=True)

    await page.goto(gateway.origin + "/dashboard/customers")
    await page.fill("input[name=q]", "zoe@example.com")
    await page.press("input[name=q]", "Enter")
    await page.wait_for_selector("#timeline")
    body = await page.inner_text("main")
    assert "email:zoe@example.com" in body and "Order Completed" in body
    await page.screenshot(path=ARTIFACTS / "dashboard-customer.png", full_page=True)

    await page.goto(gateway.origin + "/dashboard/agents")
    assert "sync" in await page.inner_text("main")
    await page.screenshot(path=ARTIFACTS / "dashboard-agents.png", full_page=True)
    assert errors == []


async def _tile(page: Page, measure: str, value: str) -> bool:
    return (await page.inner_text(f"[data-measure={measure}]")).strip() == value
