"""The Segment-compatible HTTP tracking API, so analytics SDKs can point at Touchpoint unchanged.

``POST /v1/{track,page,screen,identify,alias,group,batch,import}``: the write key as HTTP Basic
user name (as the SDKs send it) or ``writeKey`` in the body (browsers' beacons); gzip bodies;
32 KB per event and 500 KB per request; ``messageId`` de-duplication; ``sentAt`` clock-skew
correction. 200 ``{"success": true, ...}`` (what the SDKs treat as success) once the events are
in Redis; invalid items of a batch are listed with their reasons while the valid ones are kept.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from channels.weblog.capture import capture, check_origin, client_of, cors_headers, site_of
from gateway.events import EventType, parse_body, write_key_of
from gateway.web.errors import error_response
from gateway.web.state import CONFIG, COUNTERS

ENDPOINTS: Final[dict[str, EventType | None]] = {
    "track": "track",
    "page": "page",
    "screen": "screen",
    "identify": "identify",
    "alias": "alias",
    "group": "group",
    "batch": None,
    "import": None,  # Segment's older name for batch
}


def setup(app: web.Application) -> None:
    for name in ENDPOINTS:
        app.router.add_post(f"/v1/{name}", receive)
        app.router.add_route("OPTIONS", f"/v1/{name}", preflight)


async def receive(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    cors = cors_headers(request, config)
    try:
        return await _receive(request, cors)
    except Exception as exc:
        response = error_response(request, exc)
        response.headers.update(cors)  # a browser must be able to read the refusal too
        return response


async def _receive(request: web.Request, cors: dict[str, str]) -> web.Response:
    config = request.app[CONFIG]
    body = await request.read()
    site_name, site = site_of(request, config, write_key_of(body))
    check_origin(request, site)
    client = client_of(request, config.web.trust_forwarded)
    kind = request.path.rsplit("/", 1)[1]
    events, rejected = parse_body(
        body,
        site=site_name,
        channel="web",
        default_type=ENDPOINTS[kind],
        anonymous_ok=client.no_tracking and site.honor_dnt,
    )
    request.app[COUNTERS].rejected += len(rejected)
    reasons = [{"index": r.index, "error": r.error, "field": r.field} for r in rejected]
    if not events:
        return web.json_response(
            {"success": False, "error": "no valid events", "rejected": reasons},
            status=400,
            headers=cors,
        )
    captured = await capture(request, client, site_name, events)
    body_out = {
        "success": True,
        "accepted": captured.accepted,
        "duplicates": captured.duplicates,
        "withheld": captured.withheld,
        "rejected": reasons,
    }
    return web.json_response(body_out, headers=cors)


async def preflight(request: web.Request) -> web.Response:
    cors = cors_headers(request, request.app[CONFIG])
    if not cors:
        raise web.HTTPForbidden(reason="origin not allowed")
    cors.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, Content-Encoding",
            "Access-Control-Max-Age": "86400",
        }
    )
    return web.Response(status=204, headers=cors)
