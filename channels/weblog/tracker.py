"""``GET /t.js``: the JavaScript tracker, with the site's settings baked in.

The snippet loads ``/t.js?k=<write key>``; the site's privacy and cookie settings are put in
front of the script, so one cacheable request gives the tracker all it needs.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

from aiohttp import web

from gateway.web.state import CONFIG

SCRIPT = web.AppKey("web_tracker_script", str)
MARKER = "/*__TOUCHPOINT_CONFIG__*/{}"


def setup(app: web.Application) -> None:
    script = resources.files("channels.weblog").joinpath("static/t.js").read_text("utf-8")
    if MARKER not in script:
        raise RuntimeError(f"t.js lacks its configuration marker {MARKER!r}")
    app[SCRIPT] = script
    app.router.add_get("/t.js", tracker)


def settings(request: web.Request) -> dict[str, object]:
    """What the tracker needs to know about its site (nothing secret: the write key is public)."""
    config = request.app[CONFIG]
    key = request.query.get("k", "")
    name = config.site_for_key(key)
    if name is None:
        return {}
    site = config.sites[name]
    return {
        "writeKey": key,
        "honorDnt": site.honor_dnt,
        "cookieDomain": site.cookie_domain,
        "cookieDays": site.cookie_days,
        "decide": False,  # the decision API comes with the push engine; slots stay as they are
    }


async def tracker(request: web.Request) -> web.Response:
    body = request.app[SCRIPT].replace(MARKER, json.dumps(settings(request), sort_keys=True))
    etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        text=body, content_type="application/javascript", charset="utf-8", headers=headers
    )
