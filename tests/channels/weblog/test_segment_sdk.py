"""Segment's own Python SDK, unchanged but for its host, talking to the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from segment.analytics import Client as SegmentClient

from gateway import keys as K
from gateway.config import Config
from gateway.events import unpack
from gateway.web.app import create_app
from gateway.web.state import BUS, REDIS


async def test_the_segment_python_sdk_works_unchanged(
    aiohttp_server: Any, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> None:
    server = await aiohttp_server(create_app(make_config(service_redis_url, prefix)))
    errors: list[Any] = []
    sdk = SegmentClient(
        "demo-write-key",
        host=str(server.make_url("")),
        sync_mode=True,  # each call is one POST /v1/batch, answered before it returns
        gzip=True,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )

    def use_the_sdk() -> None:
        sdk.identify("u42", {"email": "ann@example.com", "plan": "gold"})
        sdk.track("u42", "Order Completed", {"order_id": "o1", "revenue": 42.5})
        sdk.page("u42", "Docs", "Setup", {"path": "/docs/setup"})
        sdk.screen("u42", "App", "Cart")
        sdk.group("u42", "acme", {"name": "ACME"})
        sdk.alias("u42-old", "u42")

    await asyncio.to_thread(use_the_sdk)
    assert errors == []
    app = server.app
    rows = await app[REDIS].xrange(app[BUS].keys.stream(K.EVENTS))
    events = [e for _, fields in rows for e in unpack(fields[K.ENTRY_FIELD])]
    assert [(e.type, e.name, e.user_id) for e in events] == [
        ("identify", None, "u42"),
        ("track", "Order Completed", "u42"),
        ("page", "Setup", "u42"),
        ("screen", "Cart", "u42"),
        ("group", None, "u42"),
        ("alias", None, "u42"),
    ]
    identify, track, page = events[:3]
    assert identify.traits == {"email": "ann@example.com", "plan": "gold"}
    assert track.properties == {"order_id": "o1", "revenue": 42.5}
    assert page.properties["category"] == "Docs"
    assert events[4].group_id == "acme" and events[5].previous_id == "u42-old"
    assert track.context["library"]["name"] == "analytics-python"
    assert all(e.event_id for e in events) and len({e.event_id for e in events}) == 6
