"""``POST /v1/events``: one event or ``{"batch": [...]}`` in the Segment shape.

Answers 200 only once the accepted events are one entry in Redis. Invalid items of a batch are
listed with their reasons while the valid ones are kept; a body with nothing valid is a 400.
"""

from __future__ import annotations

from aiohttp import web

from gateway import keys as K
from gateway.events import parse_body
from gateway.web.auth import site_for
from gateway.web.state import CONFIG, COUNTERS, PUBLISHER


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/events", ingest)


async def ingest(request: web.Request) -> web.Response:
    app = request.app
    site = site_for(request, app[CONFIG])
    body = await request.read()
    events, rejected = parse_body(body, site=site, channel="api")
    counters = app[COUNTERS]
    counters.rejected += len(rejected)
    rejects = [{"index": r.index, "error": r.error, "field": r.field} for r in rejected]
    if not events:
        return web.json_response({"error": "no valid events", "rejected": rejects}, status=400)
    await app[PUBLISHER].publish(K.EVENTS, events)
    for event in events:
        counters.received[event.channel] = counters.received.get(event.channel, 0) + 1
    return web.json_response({"success": True, "accepted": len(events), "rejected": rejects})
