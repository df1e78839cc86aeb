"""``GET /t.gif``: a 1x1 GIF for places without JavaScript (email clients, noscript, kiosks).

Either Segment's pixel form, ``?data=<base64 JSON message with writeKey>``, or flat
parameters: ``writeKey``, ``type`` (default ``track`` when ``event`` is given, else ``page``),
``event``, ``name``, ``anonymousId``, ``userId``, ``messageId``; every other parameter becomes a
property. ``send_image=0`` answers 204 instead of the image.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiohttp import web

from channels.weblog.capture import capture, client_of, site_of
from gateway.errors import EventError
from gateway.events import parse_message
from gateway.web.state import CONFIG

GIF: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE: Final = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
MESSAGE_FIELDS: Final = frozenset({"type", "event", "name", "anonymousId", "userId", "messageId"})


def setup(app: web.Application) -> None:
    app.router.add_get("/t.gif", pixel)


async def pixel(request: web.Request) -> web.Response:
    if request.method == "HEAD":  # a link checker or a proxy: what it would get, no event
        return web.Response(body=GIF, content_type="image/gif", headers=NO_CACHE)
    config = request.app[CONFIG]
    message = message_of(dict(request.query))
    site_name, site = site_of(request, config, str(message.pop("writeKey", "") or "") or None)
    client = client_of(request, config.web.trust_forwarded)
    event = parse_message(
        msgspec.json.encode(message),
        site=site_name,
        channel="web",
        received_at=datetime.now(UTC),
        anonymous_ok=client.no_tracking and site.honor_dnt,
    )
    await capture(request, client, site_name, [event])
    if request.query.get("send_image") == "0":
        return web.Response(status=204, headers=NO_CACHE)
    return web.Response(body=GIF, content_type="image/gif", headers=NO_CACHE)


def message_of(query: dict[str, str]) -> dict[str, Any]:
    """The Segment message a pixel's query string stands for (plain function, no I/O)."""
    query.pop("send_image", None)
    if "data" in query:
        raw = query["data"]
        try:
            decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            decoded_message = msgspec.json.decode(decoded)
        except (binascii.Error, ValueError, msgspec.DecodeError, RecursionError) as exc:
            raise EventError(f"not base64-encoded JSON: {exc}", "data") from None
        if not isinstance(decoded_message, dict):
            raise EventError("must encode a JSON object", "data")
        decoded_message.setdefault("type", "track")
        return decoded_message
    message: dict[str, Any] = {k: v for k, v in query.items() if k in MESSAGE_FIELDS}
    message["writeKey"] = query.get("writeKey", "")
    message.setdefault("type", "track" if "event" in message else "page")
    properties = {k: v for k, v in query.items() if k not in MESSAGE_FIELDS and k != "writeKey"}
    if properties:
        message["properties"] = properties
    return message
