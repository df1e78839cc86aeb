"""The JavaScript tracker (/t.js) in headless Chromium against the real gateway and real Redis.

The test shop is served from a second origin, so every delivery crosses CORS for real. The
gateway runs on a loopback port of its own and is stopped and started again on the same port
to show the offline queue at work.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from gateway import keys as K
from gateway.config import Config
from gateway.events import Event, unpack
from tests.conftest import CHROME_UA, ROOT
from tests.helpers import LiveGateway as Gateway
from tests.helpers import eventually

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page, Request

ARTIFACTS = ROOT / "test-artifacts"
KEY = "demo-write-key"
Stored = Callable[[], Awaitable[list[Event]]]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script>window.touchpoint = window.touchpoint || [];{early}</script>
<script async src="{gateway}/t.js?k={key}"{attributes}></script>
</head>
<body>
<h1>{title}</h1>
<p><a id="in" href="/shop/inside">More products</a></p>
<p><a id="out" href="{elsewhere}">Our partner shop</a></p>
<div data-touchpoint-slot="home">Default slot content</div>
</body>
</html>
"""


class Shop:
    """A tiny site on another origin whose pages carry the tracker snippet."""

    def __init__(self) -> None:
        self.port = 0
        self.gateway = ""
        self._runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/shop/{tail:.*}", self._page)
        app.router.add_get("/elsewhere", self._elsewhere)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _page(self, request: web.Request) -> web.Response:
        # ?k=<unknown key> makes the gateway send no settings: the tracker then reads the key
        # from the script tag's data-write-key.
        unknown = request.query.get("k")
        html = PAGE.format(
            title=f"Test shop {request.match_info['tail']}",
            gateway=self.gateway,
            key=unknown or KEY,
            attributes=f' data-write-key="{KEY}"' if unknown else "",
            # ?early=1: a call made before the tracker loaded, kept by the stub
            early=' touchpoint.push(["track", "Early Call"]);' if "early" in request.query else "",
            elsewhere=f"http://localhost:{self.port}/elsewhere",  # another host: outbound
        )
        return web.Response(text=html, content_type="text/html")

    async def _elsewhere(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<title>Elsewhere</title><p>elsewhere</p>", content_type="text/html"
        )


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    server = Shop()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def gateway(
    shop: Shop, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> AsyncIterator[Gateway]:
    config = make_config(
        service_redis_url, prefix, "[bus]\nblock = 0.1", sites__demo__allowed_origins=shop.origin
    )
    server = Gateway(config)
    await server.start()
    shop.gateway = server.origin
    yield server
    await server.stop()


@pytest.fixture
def stored(redis_client: aioredis.Redis, prefix: str) -> Stored:
    """``await stored()``: every event on the bus, in order."""

    async def read() -> list[Event]:
        rows = await redis_client.xrange(K.Keys(prefix).stream(K.EVENTS))
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], rows)
        return [e for _, fields in entries for e in unpack(fields[K.ENTRY_FIELD])]

    return read


async def open_page(
    browser: Browser,
    url: str,
    init_script: str = "",
    headers: dict[str, str] | None = None,
    sent: list[dict[str, Any]] | None = None,
) -> tuple[BrowserContext, Page]:
    """A fresh browser profile on ``url``; ``sent`` collects the messages the page posts."""
    context = await browser.new_context(user_agent=CHROME_UA, extra_http_headers=headers or {})
    if init_script:
        await context.add_init_script(init_script)
    page = await context.new_page()
    if sent is not None:

        def record(request: Request) -> None:
            if request.url.endswith("/v1/batch"):
                sent.extend(json.loads(request.post_data or "{}")["batch"])

        page.on("request", record)
    await page.goto(url)  # the load event waits for the async tracker script
    assert await page.evaluate("touchpoint.version") == "0.1.0"
    return context, page


async def flush(page: Page) -> list[bool]:
    """Send what the tracker holds now; True per request the gateway was done with."""
    return await page.evaluate("touchpoint.flush()")  # type: ignore[no-any-return]


async def local(page: Page, key: str) -> Any:
    return await page.evaluate("k => localStorage.getItem(k)", key)


async def screenshot(page: Page, name: str) -> None:
    await page.screenshot(path=ARTIFACTS / f"tracker-{name}.png")


async def test_page_views_clicks_track_identify_and_reset(
    browser: Browser, shop: Shop, gateway: Gateway, stored: Stored
) -> None:
    async def arrived(check: Callable[[Event], bool], count: int = 1) -> list[Event]:
        async def matching() -> list[Event]:
            found = [e for e in await stored() if check(e)]
            return found if len(found) >= count else []

        return await eventually(matching)  # type: ignore[no-any-return]

    before = "window.globalsBefore = Object.getOwnPropertyNames(window)"
    context, page = await open_page(browser, shop.url("/shop/home"), before)
    added = "Object.getOwnPropertyNames(window).filter(k => !globalsBefore.includes(k))"
    assert await page.evaluate(added) == ["globalsBefore", "touchpoint"]  # no other global
    await flush(page)
    [first] = await arrived(lambda e: e.type == "page")
    [cookie] = [c for c in await context.cookies(shop.origin) if c["name"] == "tp_aid"]
    assert first.anonymous_id == cookie["value"] == await local(page, "tp_aid")
    assert (cookie["path"], cookie["sameSite"], cookie["httpOnly"]) == ("/", "Lax", False)
    assert 364 * 86400 < cookie["expires"] - time.time() <= 365 * 86400  # cookie_days
    assert first.user_id is None
    assert (first.channel, first.site, first.name) == ("web", "demo", None)
    assert first.context["page"] == {
        "path": "/shop/home",
        "url": shop.url("/shop/home"),
        "referrer": "",
        "title": "Test shop home",
        "search": "",
    }
    assert first.properties["path"] == "/shop/home"
    assert first.context["library"] == {"name": "touchpoint.js", "version": "0.1.0"}
    assert first.context["ip"] == "127.0.0.0"  # anonymized
    ua = first.context["userAgentData"]
    assert (ua["browser"], ua["os"], ua["deviceType"], ua["bot"]) == (
        "Chrome",
        "Linux",
        "desktop",
        False,
    )
    assert first.context["touchpoint"] == {"dropped": 0}
    assert "dnt" not in first.context

    # A single-page app changes the URL without loading a page.
    await page.evaluate(
        """async () => {
            history.pushState({}, "", "/shop/p/SKU-1?utm_source=news&utm_campaign=spring");
            await new Promise(resolve => setTimeout(resolve, 0));  // after the tracker's own
            await touchpoint.flush();
        }"""
    )
    second = (await arrived(lambda e: e.type == "page", 2))[1]
    assert second.context["page"]["path"] == "/shop/p/SKU-1"
    assert second.context["page"]["referrer"] == shop.url("/shop/home")
    assert second.context["campaign"] == {"source": "news", "name": "spring"}
    assert second.anonymous_id == first.anonymous_id

    await page.evaluate(
        """() => {
            touchpoint.track("Added To Cart", {sku: "SKU-1", price: 9.5});
            touchpoint.identify("user-42", {email: "ada@example.com"});
            touchpoint.push(["track", "Wishlist Viewed"]);  // the stub's form works after load
        }"""
    )
    assert all(await flush(page))
    [added] = await arrived(lambda e: e.name == "Added To Cart")
    assert added.properties == {"sku": "SKU-1", "price": 9.5}
    assert (added.type, added.anonymous_id, added.user_id) == ("track", first.anonymous_id, None)
    [identify] = await arrived(lambda e: e.type == "identify")
    assert (identify.user_id, identify.anonymous_id) == ("user-42", first.anonymous_id)
    assert identify.traits == {"email": "ada@example.com"}
    [wishlist] = await arrived(lambda e: e.name == "Wishlist Viewed")
    assert wishlist.user_id == "user-42"
    await screenshot(page, "shop")

    # A link to the same host is no outbound link: just the next page view.
    await page.click("#in")
    await page.wait_for_url(shop.url("/shop/inside"))
    await page.wait_for_load_state()
    await flush(page)
    [inside] = await arrived(lambda e: e.context.get("page", {}).get("path") == "/shop/inside")
    assert inside.context["page"]["referrer"] == second.context["page"]["url"]

    # An outbound link: tracked as the page goes away.
    await page.click("#out")
    await page.wait_for_url(f"http://localhost:{shop.port}/elsewhere")
    [outbound] = await arrived(lambda e: e.name == "Outbound Link Clicked")
    assert outbound.context["page"]["path"] == "/shop/inside"
    assert outbound.properties == {
        "href": f"http://localhost:{shop.port}/elsewhere",
        "text": "Our partner shop",
    }
    assert (outbound.anonymous_id, outbound.user_id) == (first.anonymous_id, "user-42")

    # Back on the shop: the same visitor, still signed in; then reset.
    await page.goto(shop.url("/shop/again"))
    await flush(page)
    [again] = await arrived(lambda e: e.context.get("page", {}).get("path") == "/shop/again")
    assert (again.anonymous_id, again.user_id) == (first.anonymous_id, "user-42")
    await page.evaluate('touchpoint.reset(); touchpoint.track("After Reset")')
    await flush(page)
    [after] = await arrived(lambda e: e.name == "After Reset")
    assert after.anonymous_id and after.anonymous_id != first.anonymous_id
    assert after.user_id is None
    [cookie] = [c for c in await context.cookies(shop.origin) if c["name"] == "tp_aid"]
    assert cookie["value"] == after.anonymous_id == await local(page, "tp_aid")
    assert await local(page, "tp_uid") is None

    ids = [e.event_id for e in await stored()]
    assert len(ids) == len(set(ids)) == 9  # 4 page views, 3 tracks, identify, 1 outbound
    await context.close()


@pytest.mark.parametrize(
    ("init_script", "headers"),
    [
        (
            'Object.defineProperty(Navigator.prototype, "doNotTrack", {get: () => "1"})',
            {"DNT": "1"},
        ),
        (
            'Object.defineProperty(Navigator.prototype, "globalPrivacyControl", {get: () => true})',
            {"Sec-GPC": "1"},
        ),
    ],
    ids=["do-not-track", "global-privacy-control"],
)
async def test_do_not_track_and_gpc_leave_no_identifier(
    browser: Browser,
    shop: Shop,
    gateway: Gateway,
    stored: Stored,
    init_script: str,
    headers: dict[str, str],
) -> None:
    sent: list[dict[str, Any]] = []
    context, page = await open_page(browser, shop.url("/shop/home"), init_script, headers, sent)
    await page.evaluate(
        """() => {
            touchpoint.identify("user-42", {email: "ada@example.com"});
            touchpoint.track("Added To Cart", {sku: "SKU-1"});
        }"""
    )
    assert all(await flush(page))
    events = await eventually(stored)
    assert [(e.type, e.name) for e in events] == [("page", None), ("track", "Added To Cart")]
    for event in events:
        assert (event.anonymous_id, event.user_id, event.traits) == (None, None, {})
        assert event.context["dnt"] is True
        assert "ip" not in event.context
    # The browser itself sent no identifier (the gateway would strip them anyway).
    assert [m["type"] for m in sent] == ["page", "track"]
    assert all("anonymousId" not in m and "userId" not in m for m in sent)
    assert all(m["context"]["dnt"] is True for m in sent)
    assert await context.cookies() == []
    assert await local(page, "tp_aid") is None
    assert await local(page, "tp_uid") is None
    await context.close()


async def test_events_queue_offline_and_arrive_once_when_the_gateway_is_back(
    browser: Browser, shop: Shop, gateway: Gateway, stored: Stored
) -> None:
    context, page = await open_page(browser, shop.url("/shop/home"))
    await flush(page)
    await eventually(stored)

    await gateway.stop()
    # 505 events: over the queue's cap of 500, so the 5 oldest go and the loss is reported.
    await page.evaluate(
        """() => { for (let i = 0; i < 505; i++) touchpoint.track("Offline " + i, {i}); }"""
    )
    assert not any(await flush(page))
    queue = json.loads(await local(page, "tp_q"))
    assert [m["event"] for m in queue] == [f"Offline {i}" for i in range(5, 505)]
    assert sum(m["context"]["touchpoint"]["dropped"] for m in queue) == 5
    await screenshot(page, "offline")

    await gateway.start()  # the same port
    await page.evaluate('window.dispatchEvent(new Event("online"))')
    queued = {m["messageId"] for m in queue}

    async def delivered() -> bool:
        arrived = {e.event_id for e in await stored()}
        return queued <= arrived and await local(page, "tp_q") is None

    await eventually(delivered)
    events = [e for e in await stored() if e.type == "track"]
    assert sorted(e.event_id for e in events) == sorted(queued)  # each exactly once
    assert sum(e.context["touchpoint"]["dropped"] for e in events) == 5
    assert {e.name for e in events} == {f"Offline {i}" for i in range(5, 505)}
    await context.close()


async def test_stub_calls_key_from_the_tag_and_bad_data_dropped_not_retried(
    browser: Browser, shop: Shop, gateway: Gateway, stored: Stored
) -> None:
    # The gateway does not know ?k=: the tracker gets no settings and uses data-write-key.
    context, page = await open_page(browser, shop.url("/shop/tagged?k=not-a-known-key&early=1"))
    await flush(page)

    async def both() -> list[Event]:
        events: list[Event] = await stored()
        return events if len(events) == 2 else []

    events = await eventually(both)
    # The automatic page view, then what the page asked for before the tracker was there.
    assert [(e.type, e.name, e.context["page"]["path"]) for e in events] == [
        ("page", None, "/shop/tagged"),
        ("track", "Early Call", "/shop/tagged"),
    ]
    # An event name over 200 characters: the gateway answers 400 and the tracker lets it go.
    async with page.expect_response(lambda r: r.url.endswith("/v1/batch")) as response:
        sent = await page.evaluate('touchpoint.track("x".repeat(201)); touchpoint.flush()')
    assert sent == [True]
    assert (await response.value).status == 400
    assert await local(page, "tp_q") is None
    assert len(await stored()) == 2
    await context.close()
