"""The chain as ``touchpoint serve`` runs it (the collector agent, or the five agents it stands
for): events posted over HTTP end up in a profile."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import Config
from gateway.datamart.profiles import find_customer, get_profile
from gateway.web.app import create_app
from gateway.web.state import BUS, REDIS
from tests.conftest import CHROME_UA
from tests.helpers import eventually

#: The write key, sent by a desktop browser (the test client's own user agent is a bot's).
HEADERS = {
    "Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode(),
    "User-Agent": CHROME_UA,
}


@pytest.mark.parametrize(
    "agents",
    [
        "",  # the default: the collector agent, the chain in one pass
        '[agents]\nrun = ["filter", "sessions", "identity", "profile", "sync", "sync-sessions"]',
    ],
    ids=["collector", "five-agents"],
)
async def test_posted_events_reach_the_data_mart(
    aiohttp_client: Any,
    make_config: Callable[..., Config],
    service_redis_url: str,
    prefix: str,
    agents: str,
) -> None:
    config = make_config(service_redis_url, prefix, "[bus]\nblock = 0.05", agents)
    assert ("collector" in config.agents.run) == (not agents)
    client = await aiohttp_client(create_app(config))
    redis, keys = client.app[REDIS], client.app[BUS].keys
    batch = {
        "batch": [
            {"type": "page", "anonymousId": "web-1", "messageId": "m1",
             "properties": {"url": "https://shop.example/"}},
            {"type": "track", "event": "Product Viewed", "anonymousId": "web-1", "messageId": "m2",
             "properties": {"product_id": "P7", "category": "hats"}},
            {"type": "identify", "anonymousId": "web-1", "messageId": "m3",
             "traits": {"email": "Bob@Example.com"}},
            {"type": "page", "anonymousId": "crawler", "messageId": "m4",
             "context": {"userAgent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}},
        ]
    }  # fmt: skip
    response = await client.post("/v1/batch", json=batch, headers=HEADERS)
    assert response.status == 200, await response.text()

    async def profile() -> Any:
        customer = await find_customer(redis, keys, "demo", "email", "bob@example.com")
        found = customer and await get_profile(redis, keys, customer)
        return found if found and found.counters.events == 3 else None

    found = await eventually(profile)
    assert found.counters.visits == 1 and [i.product_id for i in found.viewed] == ["P7"]
    assert await find_customer(redis, keys, "demo", "anonymous_id", "crawler") is None
