"""``GET /v1/olap`` (admin): named cube queries as JSON or CSV, and the warehouse's cleanup
context (open, migrate, close) that the app registers before the agents'."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.errors import OlapError, WarehouseError
from gateway.warehouse import open_warehouse
from gateway.warehouse.olap import parse_query, run
from gateway.web.auth import require_admin
from gateway.web.errors import json_error
from gateway.web.state import ADMIN_TOKEN, CONFIG, WAREHOUSE

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/olap", olap)


async def warehouse_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the configured engine and bring its schema up to date before anything uses it."""
    config = app[CONFIG]
    warehouse = await open_warehouse(config)
    try:
        applied = await warehouse.migrate()
    except BaseException:
        await warehouse.close()
        raise
    if applied:
        log.info("warehouse (%s): applied migrations %s", warehouse.engine, applied)
    app[WAREHOUSE] = warehouse
    yield
    await warehouse.close()


async def olap(request: web.Request) -> web.Response:
    """``?measures=a,b&dims=x,y&filters=dim=v1,v2&from=YYYY-MM-DD&to=...&format=json|csv``;
    ``filters`` (or ``filter``) may repeat; several filters in one are ``;``-separated."""
    require_admin(request, request.app[ADMIN_TOKEN])
    query = request.query
    try:
        cube = parse_query(
            query.getall("measures", []),
            query.getall("dims", []),
            [*query.getall("filters", []), *query.getall("filter", [])],
            query.get("from"),
            query.get("to"),
        )
        form = query.get("format", "json")
        if form not in ("json", "csv"):
            raise OlapError(f"unknown format {form!r} (json or csv)", "format")
        result = await run(
            request.app[WAREHOUSE], cube, max_rows=request.app[CONFIG].warehouse.max_rows
        )
    except OlapError as exc:
        return web.json_response(exc.as_json(), status=exc.status)
    except WarehouseError as exc:
        log.warning("%s %s: 503: %s", request.method, request.path, exc)
        response = json_error(503, "warehouse unavailable, retry later", detail=str(exc))
        response.headers["Retry-After"] = "5"
        return response
    if form == "csv":
        return web.Response(
            text=result.as_csv(),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="olap.csv"'},
        )
    return web.json_response(result.as_json())
