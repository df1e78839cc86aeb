"""The dashboard: server-rendered pages behind the admin token (login form, signed cookie).

Pages: overview (live events per minute by channel, today's figures), OLAP explorer, customer
360, agents. Charts are drawn with uPlot, served from the gateway (no CDN).
"""

from __future__ import annotations

import hmac
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from gateway.agents import counts
from gateway.erp import stock
from gateway.errors import BusUnavailable
from gateway.warehouse import olap
from gateway.web.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    is_admin,
    require_admin,
    session_cookie,
)
from gateway.web.state import ADMIN_TOKEN, AGENTS, BUS, CONFIG, REDIS
from gateway.web.templates import environment

PAGES = web.AppKey("dashboard_templates", jinja2.Environment)
STATIC = Path(__file__).resolve().parent / "static"


def setup(app: web.Application) -> None:
    app[PAGES] = environment("web/dashboard")
    app.router.add_get("/dashboard", to_overview)
    app.router.add_get("/dashboard/", overview)
    app.router.add_get("/dashboard/login", login_form)
    app.router.add_post("/dashboard/login", login)
    app.router.add_post("/dashboard/logout", logout)
    app.router.add_get("/dashboard/olap", olap_explorer)
    app.router.add_get("/dashboard/agents", agents)
    app.router.add_get("/v1/dashboard/live", live)
    app.router.add_static("/dashboard/static", STATIC, name="dashboard_static", append_version=True)


def render(request: web.Request, template: str, **values: Any) -> web.Response:
    static = request.app.router["dashboard_static"]
    html = (
        request.app[PAGES]
        .get_template(template)
        .render(path=request.path, static=lambda name: str(static.url_for(filename=name)), **values)
    )
    return web.Response(text=html, content_type="text/html")


def page_guard(request: web.Request) -> None:
    """Send a visitor without a session to the login form, back here afterwards."""
    if not is_admin(request, request.app[ADMIN_TOKEN]):
        raise web.HTTPFound(f"/dashboard/login?next={quote(request.path_qs)}")


async def to_overview(request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard/")


async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", next=_safe_next(request.query.get("next")), error="")


async def login(request: web.Request) -> web.Response:
    try:
        form = await request.post()
    except (ValueError, LookupError, RuntimeError) as exc:
        # not UTF-8, no boundary; an unknown charset (LookupError) or transfer encoding
        # (RuntimeError)
        raise web.HTTPBadRequest(reason=f"unreadable form: {exc}") from None
    token, target = str(form.get("token", "")), _safe_next(str(form.get("next", "")))
    if not hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN].encode()):
        response = render(request, "login.html", next=target, error="That token is not right.")
        response.set_status(401)
        return response
    response = web.HTTPFound(target)
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie(request.app[ADMIN_TOKEN]),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        path="/",
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPFound("/dashboard/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard: a login form must not be an open redirect."""
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard/"


async def overview(request: web.Request) -> web.Response:
    page_guard(request)
    return render(request, "overview.html")


async def olap_explorer(request: web.Request) -> web.Response:
    page_guard(request)
    today = date.today()
    return render(
        request,
        "olap.html",
        measures=list(olap.MEASURES),
        dimensions=list(olap.DIMENSIONS),
        chosen_measures=request.query.getall("measure", ["events", "visitors", "revenue"]),
        chosen_dims=request.query.getall("dim", ["day"]),
        date_from=(today - timedelta(days=30)).isoformat(),
        date_to=(today + timedelta(days=1)).isoformat(),
    )


async def live(request: web.Request) -> web.Response:
    """Events per minute by channel over the last hour, from the channel-counts agent."""
    require_admin(request, request.app[ADMIN_TOKEN])
    app = request.app
    minutes = await counts.per_minute(app[REDIS], app[BUS].keys, 60)
    channels = sorted({c for _, per in minutes for c in per})
    return web.json_response(
        {
            "minutes": [m * 60 for m, _ in minutes],
            "series": {c: [per.get(c, 0) for _, per in minutes] for c in channels},
        }
    )


async def agents(request: web.Request) -> web.Response:
    page_guard(request)
    app = request.app
    try:
        stats = await app[BUS].stats()
    except BusUnavailable:
        stats = None
    streams = (stats or {}).get("streams", {})
    rows = []
    for agent in app[AGENTS].agents:
        group = streams.get(agent.stream, {}).get("groups", {}).get(agent.name, {})
        rows.append({"agent": agent, "group": group})
    erp = {}
    if stats is not None:
        erp = await stock.status(app[REDIS], app[BUS].keys, app[CONFIG].erp.stale_after)
    return render(
        request, "agents.html", rows=rows, streams=streams, redis_up=stats is not None, erp=erp
    )
