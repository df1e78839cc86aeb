"""The app over HTTP: ingest, health, readiness, metrics, and Redis going away and coming back."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import keys as K
from gateway.agents import counts
from gateway.config import Config
from gateway.events import unpack
from gateway.web.app import create_app
from gateway.web.state import ADMIN_TOKEN, BUS, EMBEDDED, REDIS
from tests.helpers import Proxy, eventually


def basic(key: str) -> dict[str, str]:
    """The write key as SDKs send it: the HTTP Basic user name, empty password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


AUTH = basic("demo-write-key")
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
async def make_client(aiohttp_client: Any) -> MakeClient:
    async def make(app: web.Application) -> Client:
        return await aiohttp_client(app)  # type: ignore[no-any-return]

    return make


def track(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "anonymousId": f"a{i}",
            "messageId": f"m{i}", **extra}  # fmt: skip


async def stored_event_ids(app: web.Application) -> list[str]:
    rows = await app[REDIS].xrange(app[BUS].keys.stream(K.EVENTS))
    return [e.event_id for _, fields in rows for e in unpack(fields[K.ENTRY_FIELD])]


@pytest.fixture
async def service_app(
    make_client: MakeClient, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> Client:
    return await make_client(create_app(make_config(service_redis_url, prefix)))


async def test_ingest_answers_once_events_are_in_redis(service_app: Client) -> None:
    resp = await service_app.post("/v1/events", json=track(1), headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"success": True, "accepted": 1, "rejected": []}
    resp = await service_app.post(
        "/v1/events", json={"batch": [track(2), {"type": "track", "userId": "u"}]}, headers=AUTH
    )
    body = await resp.json()
    assert resp.status == 200
    assert body["accepted"] == 1
    assert body["rejected"] == [{"index": 1, "error": "is required for track", "field": "event"}]
    assert await stored_event_ids(service_app.app) == ["m1", "m2"]


async def test_an_integer_the_bus_cannot_carry_is_refused_and_ingest_goes_on(
    service_app: Client,
) -> None:
    """It once reached the publisher, whose flush then failed for good: every later request
    answered 503 until a restart."""
    big = track(1, properties={"n": 10**23})
    resp = await service_app.post("/v1/events", json={"batch": [big, track(2)]}, headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["rejected"] == [
        {"index": 0, "error": "is an integer out of range (-2^63 to 2^64 - 1)",
         "field": "properties.n"}
    ]  # fmt: skip
    resp = await service_app.post("/v1/events", json=big, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["field"] == "properties.n"
    assert (await service_app.post("/v1/events", json=track(3), headers=AUTH)).status == 200
    assert await stored_event_ids(service_app.app) == ["m2", "m3"]


async def test_agents_count_what_was_ingested(service_app: Client) -> None:
    batch = [track(i, channel=("pos" if i % 3 == 0 else "web")) for i in range(30)]
    assert (await service_app.post("/v1/events", json={"batch": batch}, headers=AUTH)).status == 200
    app = service_app.app
    expected = {"pos": 10, "web": 20}
    await eventually(lambda: counts.read(app[REDIS], app[BUS].keys), within=20)
    await eventually(lambda: _equals(counts.read(app[REDIS], app[BUS].keys), expected), within=20)


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return (await value) == expected


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"data": b"{}"}, 401, "missing or unknown write key"),
        ({"data": b"{}", "headers": basic("wrong-key-123")}, 401, "unknown write key"),
        ({"data": b"{nope", "headers": AUTH}, 400, "invalid JSON"),
        ({"json": {"type": "track", "event": "X"}, "headers": AUTH}, 400, "userId or anonymousId"),
        ({"json": {"batch": [{"type": "bogus", "userId": "u"}]}, "headers": AUTH}, 400, "no valid"),
        ({"data": b"x" * 600_000, "headers": AUTH}, 413, "Request Entity Too Large"),
    ],
)
async def test_bad_requests_get_a_json_reason(
    service_app: Client, kwargs: dict[str, Any], status: int, error: str
) -> None:
    resp = await service_app.post("/v1/events", **kwargs)
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert error in (await resp.json())["error"]
    assert await stored_event_ids(service_app.app) == []


async def test_gzip_bodies_and_unknown_routes(service_app: Client) -> None:
    body = gzip.compress(json.dumps(track(7)).encode())
    resp = await service_app.post(
        "/v1/events", data=body, headers={**AUTH, "Content-Encoding": "gzip"}
    )
    assert resp.status == 200
    assert await stored_event_ids(service_app.app) == ["m7"]
    resp = await service_app.get("/v1/events")
    assert (resp.status, (await resp.json())["error"]) == (405, "Method Not Allowed")
    assert (await service_app.get("/nope")).status == 404


async def test_health_readiness_metrics_and_bus_stats(service_app: Client) -> None:
    assert (await service_app.get("/healthz")).status == 200
    await eventually(lambda: _status(service_app.get("/readyz"), 200))
    await service_app.post("/v1/events", json={"batch": [track(1), track(2)]}, headers=AUTH)
    metrics = await (await service_app.get("/metrics")).text()
    assert 'touchpoint_events_received_total{channel="api"} 2.0' in metrics
    assert "touchpoint_events_published_total 2.0" in metrics
    assert 'touchpoint_agent_running{agent="channel-counts"} 1.0' in metrics
    assert 'touchpoint_stream_length{stream="events"} 1.0' in metrics
    assert (await service_app.get("/v1/bus/stats")).status == 401
    token = service_app.app[ADMIN_TOKEN]
    resp = await service_app.get("/v1/bus/stats", headers={"Authorization": f"Bearer {token}"})
    stats = await resp.json()
    assert stats["streams"]["events"]["length"] == 1
    assert "channel-counts" in stats["streams"]["events"]["groups"]


async def _status(request: Awaitable[Any], status: int) -> bool:
    return (await request).status == status


async def test_redis_unreachable_gives_503_then_recovers_by_itself(
    make_client: MakeClient, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> None:
    target = urlparse(service_redis_url)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    config = make_config(f"redis://127.0.0.1:{proxy.port}{target.path}", prefix)
    client = await make_client(create_app(config))
    assert (await client.post("/v1/events", json=track(1), headers=AUTH)).status == 200
    await eventually(lambda: _status(client.get("/readyz"), 200))

    await proxy.cut()
    async with asyncio.timeout(config.redis.timeout + 5):  # a bound, not a benchmark
        resp = await client.post("/v1/events", json=track(2), headers=AUTH)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert "unavailable" in (await resp.json())["error"]
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["redis"] is False
        admin = {"Authorization": f"Bearer {client.app[ADMIN_TOKEN]}"}
        customer = await client.get("/v1/customers/c_someone", headers=admin)
        assert customer.status == 503  # the data mart is away: not a 500
        assert "unavailable" in (await customer.json())["error"]

    await proxy.start()
    await eventually(lambda: _status(client.post("/v1/events", json=track(3), headers=AUTH), 200))
    await eventually(lambda: _status(client.get("/readyz"), 200))
    await proxy.cut()


async def test_hung_redis_gives_503_within_the_timeout_then_recovers(
    make_client: MakeClient, make_config: Callable[..., Config]
) -> None:
    config = make_config("", "tp")
    client = await make_client(create_app(config))
    assert (await client.post("/v1/events", json=track(1), headers=AUTH)).status == 200
    server = client.app[EMBEDDED]
    assert server.pid
    os.kill(server.pid, signal.SIGSTOP)
    try:
        async with asyncio.timeout(config.redis.timeout + 5):
            resp = await client.post("/v1/events", json=track(2), headers=AUTH)
            assert resp.status == 503
            assert (await client.get("/readyz")).status == 503
    finally:
        os.kill(server.pid, signal.SIGCONT)
    await eventually(lambda: _status(client.post("/v1/events", json=track(3), headers=AUTH), 200))
    await eventually(lambda: _status(client.get("/readyz"), 200))
    assert "m1" in await stored_event_ids(client.app)


async def test_acknowledged_events_survive_sigkill_of_the_embedded_redis(
    make_client: MakeClient, make_config: Callable[..., Config]
) -> None:
    client = await make_client(create_app(make_config("", "tp", "[agents]\nrun = []")))
    acked = []
    for n in range(50):
        batch = [track(n * 10 + i) for i in range(10)]
        resp = await client.post("/v1/events", json={"batch": batch}, headers=AUTH)
        assert resp.status == 200
        acked.extend(m["messageId"] for m in batch)
    server = client.app[EMBEDDED]
    killed = server.pid
    assert killed
    os.kill(killed, signal.SIGKILL)
    await eventually(lambda: server.restarts == 1 and server.pid not in (None, killed))
    await eventually(lambda: _status(client.post("/v1/events", json=track(999), headers=AUTH), 200))
    stored = await stored_event_ids(client.app)
    assert stored[: len(acked)] == acked
