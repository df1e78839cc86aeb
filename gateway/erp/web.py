"""``GET /v1/products/{sku}`` (admin): a product as the warehouse knows it, its price, its stock
per location with when each level was last confirmed by the ERP, and whether the stock sync
is currently failing (``stale``: the levels are the last known)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.erp import stock
from gateway.web.auth import require_admin
from gateway.web.state import ADMIN_TOKEN, BUS, REDIS, WAREHOUSE

PRODUCT_SQL = """
SELECT sku, name, category, price, cost, currency, updated_at FROM dim_product WHERE sku = $1"""
STOCK_SQL = """
SELECT location, quantity, confirmed_at FROM product_stock WHERE sku = $1 ORDER BY location"""


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/products/{sku}", get_product)


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
        "stock_stale": await stock.is_stale(redis, keys),
    }
    return web.json_response(body)


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
