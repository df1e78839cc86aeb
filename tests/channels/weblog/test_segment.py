"""The Segment-compatible API and the pixel, over HTTP, on a real Redis."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from channels.weblog.tracker import MARKER, SCRIPT
from gateway import keys as K
from gateway.config import Config
from gateway.events import MAX_EVENT_BYTES, Event, unpack
from gateway.web.app import create_app
from gateway.web.state import BUS, REDIS
from tests.helpers import eventually, raw_http

Client = TestClient[web.Request, web.Application]
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


AUTH = basic("demo-write-key")
#: JSON nested 1,000 deep: msgspec's RecursionError, once a 500 before the write key was known.
DEEP = b'{"zz":' + b"[" * 1000 + b"]" * 1000 + b"}"


@pytest.fixture
async def client(
    aiohttp_client: Any, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> Client:
    config = make_config(
        service_redis_url, prefix, sites__demo__allowed_origins="https://shop.example"
    )
    return await aiohttp_client(create_app(config))  # type: ignore[no-any-return]


async def stored(client: Client) -> list[Event]:
    app = client.app
    rows = await app[REDIS].xrange(app[BUS].keys.stream(K.EVENTS))
    return [e for _, fields in rows for e in unpack(fields[K.ENTRY_FIELD])]


def msg(i: int, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Product Viewed", "anonymousId": "a1",
            "messageId": f"m{i}", **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "message", "type_", "name"),
    [
        ("track", {"event": "Order Completed", "userId": "u1"}, "track", "Order Completed"),
        ("page", {"name": "Home", "anonymousId": "a1"}, "page", "Home"),
        (
            "screen",
            {"name": "Cart", "anonymousId": "a1", "context": {"app": {"name": "Shop"}}},
            "screen",
            "Cart",
        ),
        ("identify", {"userId": "u1", "traits": {"email": "ann@example.com"}}, "identify", None),
        ("alias", {"previousId": "a1", "userId": "u1"}, "alias", None),
        ("group", {"groupId": "g1", "userId": "u1"}, "group", None),
    ],
)
async def test_each_endpoint_stores_its_type(
    client: Client, endpoint: str, message: dict[str, Any], type_: str, name: str | None
) -> None:
    resp = await client.post(
        f"/v1/{endpoint}", json=message, headers={**AUTH, "User-Agent": CHROME}
    )
    assert resp.status == 200
    assert (await resp.json())["success"] is True
    (event,) = await stored(client)
    assert (event.type, event.name, event.site) == (type_, name, "demo")
    assert event.channel == ("mobile" if endpoint == "screen" else "web")
    assert event.context["userAgentData"]["browser"] == "Chrome"
    assert event.context["ip"] == "127.0.0.0"  # anonymized: last octet zeroed


async def test_batch_keeps_valid_items_and_explains_the_others(client: Client) -> None:
    body = {"batch": [msg(1), {"type": "track", "anonymousId": "a"}, msg(2, type="page")]}
    resp = await client.post("/v1/batch", json=body, headers=AUTH)
    result = await resp.json()
    assert resp.status == 200
    assert (result["accepted"], result["duplicates"]) == (2, 0)
    assert result["rejected"] == [{"index": 1, "error": "is required for track", "field": "event"}]
    assert [e.event_id for e in await stored(client)] == ["m1", "m2"]


async def test_gzip_and_write_key_in_the_body(client: Client) -> None:
    body = gzip.compress(json.dumps({"writeKey": "demo-write-key", "batch": [msg(1)]}).encode())
    resp = await client.post(
        "/v1/import", data=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
    )
    assert resp.status == 200
    assert [e.event_id for e in await stored(client)] == ["m1"]


async def test_duplicates_by_message_id_are_stored_once(client: Client) -> None:
    first = await client.post("/v1/batch", json={"batch": [msg(1), msg(2)]}, headers=AUTH)
    again = await client.post("/v1/batch", json={"batch": [msg(2), msg(3), msg(3)]}, headers=AUTH)
    assert (await first.json())["accepted"] == 2
    assert ((await again.json())["accepted"], (await again.json())["duplicates"]) == (1, 2)
    assert sorted(e.event_id for e in await stored(client)) == ["m1", "m2", "m3"]


async def test_clock_skew_is_corrected(client: Client) -> None:
    # The device thinks it is 2001: its event happened 5 s before it sent the batch.
    body = {"sentAt": "2001-01-01T00:00:05Z",
            "batch": [msg(1, timestamp="2001-01-01T00:00:00Z")]}  # fmt: skip
    assert (await client.post("/v1/batch", json=body, headers=AUTH)).status == 200
    (event,) = await stored(client)
    assert abs((event.received_at - event.timestamp).total_seconds() - 5) < 0.001


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"json": msg(1)}, 401, "write key"),
        ({"json": msg(1), "headers": basic("wrong-key-123")}, 401, "write key"),
        ({"json": {**msg(1), "writeKey": "nope-nope-nope"}}, 401, "write key"),
        ({"data": b"{nope", "headers": AUTH}, 400, "invalid JSON"),
        ({"data": DEEP}, 401, "write key"),
        ({"data": DEEP, "headers": AUTH}, 400, "nested too deeply"),
        ({"json": msg(1), "headers": {"Authorization": "Basic é"}}, 401, "write key"),
        ({"data": b"garbage", "headers": {**AUTH, "Content-Encoding": "gzip"}}, 400, "be read"),
        (
            {
                "json": msg(1, timestamp="9999-01-01T00:00:00Z", sentAt="2000-01-01T00:00:00Z"),
                "headers": AUTH,
            },
            400,
            "too far from sentAt",
        ),
        ({"json": msg(1, properties={"x": "y" * MAX_EVENT_BYTES}), "headers": AUTH}, 413, "32768"),
        (
            {"data": json.dumps({"batch": [msg(i) for i in range(6000)]}), "headers": AUTH},
            413,
            "Request Entity Too Large",
        ),
    ],
)
async def test_bad_requests(
    client: Client, kwargs: dict[str, Any], status: int, error: str
) -> None:
    resp = await client.post("/v1/track", **kwargs)
    assert resp.status == status
    assert error in (await resp.json())["error"]
    assert await stored(client) == []


async def test_cors_for_allowed_origins_only(client: Client) -> None:
    allowed = {"Origin": "https://shop.example"}
    pre = await client.options(
        "/v1/batch", headers={**allowed, "Access-Control-Request-Method": "POST"}
    )
    assert pre.status == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    resp = await client.post("/v1/batch", json={"batch": [msg(1)]}, headers={**AUTH, **allowed})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"

    refused = await client.post("/v1/batch", json={"batch": [msg(3)]}, headers=allowed)
    assert refused.status == 401  # no write key: the page can still read why
    assert refused.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    too_big = await client.post(
        "/v1/track",
        json=msg(4, properties={"x": "y" * MAX_EVENT_BYTES}),
        headers={**AUTH, **allowed},
    )
    assert too_big.status == 413
    assert too_big.headers["Access-Control-Allow-Origin"] == "https://shop.example"

    evil = {"Origin": "https://evil.example"}
    assert (await client.options("/v1/batch", headers=evil)).status == 403
    resp = await client.post("/v1/batch", json={"batch": [msg(2)]}, headers={**AUTH, **evil})
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert [e.event_id for e in await stored(client)] == ["m1"]


async def test_do_not_track_strips_every_identifier(client: Client) -> None:
    batch = [
        {"type": "page", "name": "Home", "anonymousId": "a1", "userId": "u1",
         "context": {"ip": "10.1.2.3"}},
        {"type": "identify", "userId": "u1", "traits": {"email": "ann@example.com"}},
        {"type": "track", "event": "Search", "properties": {"q": "shoes"}},  # no id at all
    ]  # fmt: skip
    resp = await client.post("/v1/batch", json={"batch": batch}, headers={**AUTH, "DNT": "1"})
    result = await resp.json()
    assert (result["accepted"], result["withheld"]) == (2, 1)  # the identify is not stored
    events = await stored(client)
    assert [e.type for e in events] == ["page", "track"]
    for event in events:
        assert (event.anonymous_id, event.user_id, event.traits) == (None, None, {})
        assert event.context["dnt"] is True and "ip" not in event.context
    resp = await client.post(
        "/v1/track", json={"event": "X", "context": {"dnt": True}}, headers={**AUTH, "Sec-GPC": "1"}
    )
    assert resp.status == 200


async def test_bots_are_kept_and_flagged(client: Client) -> None:
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    await client.post("/v1/page", json={"anonymousId": "b"}, headers={**AUTH, "User-Agent": bot})
    await client.post("/v1/page", json={"anonymousId": "h"}, headers={**AUTH, "User-Agent": CHROME})
    bot_event, human = await stored(client)
    assert bot_event.context["bot"] is True and bot_event.context["userAgentData"]["bot"] is True
    assert "bot" not in human.context
    metrics = await (await client.get("/metrics")).text()
    assert "touchpoint_events_bots_total 1.0" in metrics


async def test_pixel_flat_parameters_and_segment_data(client: Client) -> None:
    resp = await client.get(
        "/t.gif",
        params={"writeKey": "demo-write-key", "event": "Email Opened", "userId": "u1",
                "messageId": "px1", "campaign": "spring"},
        headers={"Referer": "https://mail.example/inbox"},
    )  # fmt: skip
    assert resp.status == 200
    assert resp.content_type == "image/gif"
    assert (await resp.read()).startswith(b"GIF89a")
    assert "no-store" in resp.headers["Cache-Control"]
    data = (
        base64.urlsafe_b64encode(
            json.dumps(
                {
                    "writeKey": "demo-write-key",
                    "event": "Kiosk Tap",
                    "anonymousId": "k1",
                    "messageId": "px2",
                }
            ).encode()
        )
        .decode()
        .rstrip("=")
    )
    resp = await client.get("/t.gif", params={"data": data, "send_image": "0"})
    assert resp.status == 204
    first, second = await stored(client)
    assert (first.name, first.user_id, first.properties) == (
        "Email Opened",
        "u1",
        {"campaign": "spring"},
    )
    assert first.context["page"]["url"] == "https://mail.example/inbox"
    assert (second.name, second.anonymous_id) == ("Kiosk Tap", "k1")


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"event": "X", "userId": "u"}, 401),
        ({"writeKey": "demo-write-key", "data": "!!!"}, 400),
        ({"writeKey": "demo-write-key", "data": base64.urlsafe_b64encode(DEEP).decode()}, 400),
        ({"writeKey": "demo-write-key", "event": "X"}, 400),  # nobody identified
    ],
)
async def test_pixel_refuses_bad_requests_with_json(
    client: Client, params: dict[str, str], status: int
) -> None:
    resp = await client.get("/t.gif", params=params)
    assert resp.status == status
    assert "error" in await resp.json()


async def test_tracker_script_carries_its_site_settings(client: Client) -> None:
    resp = await client.get("/t.js", params={"k": "demo-write-key"})
    assert resp.status == 200
    assert resp.content_type == "application/javascript"
    script = await resp.text()
    assert "__TOUCHPOINT_CONFIG__" not in script
    settings = {"cookieDays": 365, "cookieDomain": "", "decide": False, "honorDnt": True,
                "writeKey": "demo-write-key"}  # fmt: skip
    assert json.dumps(settings, sort_keys=True) in script
    again = await client.get(
        "/t.js", params={"k": "demo-write-key"}, headers={"If-None-Match": resp.headers["ETag"]}
    )
    assert again.status == 304
    unknown = await (await client.get("/t.js", params={"k": "who-knows"})).text()
    assert unknown == client.app[SCRIPT].replace(MARKER, "{}")  # an unknown key learns nothing


async def test_pixel_head_requests_record_nothing(client: Client) -> None:
    params = {"writeKey": "demo-write-key", "event": "X", "anonymousId": "a1"}
    resp = await client.head("/t.gif", params=params)
    assert (resp.status, resp.content_type) == (200, "image/gif")
    assert await stored(client) == []


async def test_header_bytes_that_are_not_utf8(client: Client) -> None:
    """aiohttp keeps them as lone surrogates: msgpack refused every event of such a request
    (a 400 blaming the bus), and an Origin echoed in the 403's reason was a 500."""
    port, body = client.port, json.dumps(msg(1)).encode()
    head = (b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n"
            b"User-Agent: Mozilla/5.0 \xff\xfe\r\nReferer: https://shop.example/\xe9")  # fmt: skip
    status, _ = await raw_http(port, head, body)
    assert status == 200
    (stored_event,) = await stored(client)
    assert stored_event.context["userAgent"] == "Mozilla/5.0 \ufffd\ufffd"
    assert stored_event.context["page"]["url"] == "https://shop.example/\ufffd"
    origin = b"POST /v1/track HTTP/1.1\r\nHost: x\r\nOrigin: http://\xff"
    status, answer = await raw_http(
        port, origin, json.dumps(msg(2, writeKey="demo-write-key")).encode()
    )
    assert status == 403
    assert "may not send events" in json.loads(answer)["error"]


async def test_a_malformed_request_is_one_warning_not_a_traceback(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logs such a request as an ERROR with ~30 lines of traceback, whoever sends it
    (on a 404 too): one WARNING line."""
    headers = {**AUTH, "Content-Encoding": "gzip"}
    for path in ("/v1/track", "/nope"):
        resp = await client.post(path, data=b"not gzip at all", headers=headers)
        assert resp.status in (400, 404)
    await eventually(lambda: _logged(caplog, "aiohttp.server"))
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert {(r.levelname, r.exc_info) for r in records} == {("WARNING", None)}
    assert "bad request from a client: Can not decode content-encoding: gzip" in caplog.text


async def _logged(caplog: pytest.LogCaptureFixture, name: str) -> bool:
    return len([r for r in caplog.records if r.name == name]) >= 2
