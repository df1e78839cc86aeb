"""The ERP's HTTP side.

``GET /v1/products/{sku}`` (admin): a product as the warehouse knows it, its price, its stock
per location with when each level was last confirmed by the ERP, and whether that stock is
stale (its sync failing, or older than ``erp.stale_after``: the levels are the last known).

``POST /v1/erp/notify`` (HMAC-signed, see ``gateway.erp.notify``): queue a sync now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from gateway.erp import notify as notification
from gateway.erp import stock
from gateway.keys import ERP
from gateway.web.auth import require_admin
from gateway.web.errors import json_error
from gateway.web.state import ADMIN_TOKEN, BUS, CONFIG, REDIS, WAREHOUSE

PRODUCT_SQL = """
SELECT sku, name, category, price, cost, currency, active, updated_at
FROM dim_product WHERE sku = $1"""
STOCK_SQL = """
SELECT location, quantity, confirmed_at FROM product_stock WHERE sku = $1 ORDER BY location"""


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/products/{sku}", get_product)
    app.router.add_post("/v1/erp/notify", notify)


async def get_product(request: web.Request) -> web.Response:
    app = request.app
    require_admin(request, app[ADMIN_TOKEN])
    sku = request.match_info["sku"]
    found = await app[WAREHOUSE].fetch(PRODUCT_SQL, [sku])
    if not found:
        raise web.HTTPNotFound(reason="no such product")
    levels = await app[WAREHOUSE].fetch(STOCK_SQL, [sku])
    redis, keys = app[REDIS], app[BUS].keys
    synced = await stock.last_sync(redis, keys)
    body: dict[str, Any] = {
        **{k: _json(v) for k, v in found[0].items()},
        "stock": {
            row["location"]: {
                "quantity": row["quantity"],
                "confirmed_at": _json(row["confirmed_at"]),
            }
            for row in levels
        },
        "stock_synced_at": _json(synced),
        "stock_stale": await stock.is_stale(redis, keys, "stock", app[CONFIG].erp.stale_after),
    }
    return web.json_response(body)


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def notify(request: web.Request) -> web.Response:
    settings = request.app[CONFIG].erp
    if not settings.notify_key.is_set:
        return json_error(404, "ERP notifications are off (set erp.notify_key)")
    body = await request.read()
    refused = notification.check_signature(
        settings.notify_key.get(),
        request.headers.get(notification.HEADER),
        body,
        settings.notify_window,
    )
    if refused is not None:
        return json_error(401, refused)
    try:
        wanted = msgspec.json.decode(body or b"{}", type=notification.SyncRequest)
    except msgspec.DecodeError as exc:
        return json_error(400, f"bad request body: {exc}")
    bus = request.app[BUS]
    [entry] = await bus.add_packed([(ERP, msgspec.msgpack.encode(wanted))])
    return web.json_response(
        {"queued": wanted.entities or "all", "full": wanted.full, "id": entry}, status=202
    )
