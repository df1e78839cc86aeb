"""A small demo shop at ``/demo/`` to click through with the tracker installed.

It is a demo of the beacon, not part of the gateway: product list, product pages, a cart and a
checkout kept in the browser, a sign-in by email (``identify``), personalization slots on the
home and product pages, and ``/demo/events`` showing the latest events arriving on the bus.
Products, stores and stock come from the demo catalogue shipped in ``gateway/data/demo``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from gateway import keys as K
from gateway.web.state import BUS, CONFIG
from gateway.web.templates import environment

DEMO_SITE = "demo"


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    category: str
    price: Decimal
    currency: str
    description: str
    #: Units on hand per location (``web`` is the online warehouse).
    stock: dict[str, int]


@dataclass(frozen=True)
class Catalogue:
    products: dict[str, Product]
    stores: dict[str, str]


def load_catalogue() -> Catalogue:
    folder = resources.files("gateway").joinpath("data/demo")
    rows = {
        name: list(csv.DictReader(folder.joinpath(f"{name}.csv").read_text("utf-8").splitlines()))
        for name in ("products", "stores", "stock")
    }
    stock: dict[str, dict[str, int]] = {}
    for row in rows["stock"]:
        stock.setdefault(row["sku"], {})[row["location"]] = int(row["quantity"])
    products = {
        row["sku"]: Product(
            sku=row["sku"],
            name=row["name"],
            category=row["category"],
            price=Decimal(row["price"]),
            currency=row["currency"],
            description=row["description"],
            stock=stock.get(row["sku"], {}),
        )
        for row in rows["products"]
    }
    return Catalogue(products, {row["store_id"]: row["name"] for row in rows["stores"]})


CATALOGUE = web.AppKey("demo_catalogue", Catalogue)
PAGES = web.AppKey("demo_templates", jinja2.Environment)


def setup(app: web.Application) -> None:
    if DEMO_SITE not in app[CONFIG].sites:
        return  # the demo needs its site (write key) configured
    app[CATALOGUE] = load_catalogue()
    app[PAGES] = environment("web/demo")
    app.router.add_get("/demo", to_home)
    app.router.add_get("/demo/", home)
    app.router.add_get("/demo/p/{sku}", product)
    app.router.add_get("/demo/cart", page("cart.html"))
    app.router.add_get("/demo/checkout", page("checkout.html"))
    app.router.add_get("/demo/signin", page("signin.html"))
    app.router.add_get("/demo/events", events)


def render(request: web.Request, template: str, **values: Any) -> web.Response:
    config = request.app[CONFIG]
    html = (
        request.app[PAGES]
        .get_template(template)
        .render(
            write_key=config.sites[DEMO_SITE].write_key,
            catalogue=request.app[CATALOGUE],
            **values,
        )
    )
    return web.Response(text=html, content_type="text/html")


def page(template: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return render(request, template)

    return handler


async def to_home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/demo/")


async def home(request: web.Request) -> web.Response:
    return render(request, "home.html")


async def product(request: web.Request) -> web.Response:
    item = request.app[CATALOGUE].products.get(request.match_info["sku"])
    if item is None:
        raise web.HTTPNotFound(reason="no such product")
    return render(request, "product.html", product=item)


async def events(request: web.Request) -> web.Response:
    """The latest events on the bus, newest first (``?format=json`` for the live view)."""
    entries = await request.app[BUS].latest(K.EVENTS, 50)
    latest = [e for entry in entries for e in reversed(entry.events)][:50]
    if request.query.get("format") == "json":
        return web.json_response(
            [
                {
                    "time": e.timestamp.isoformat(timespec="seconds"),
                    "type": e.type,
                    "name": e.name or "",
                    "channel": e.channel,
                    "site": e.site,
                    "who": e.user_id or e.anonymous_id or "(anonymous)",
                    "path": _path(e.context.get("page")),
                    "bot": bool(e.context.get("bot")),
                }
                for e in latest
            ]
        )
    return render(request, "events.html")


def _path(page: object) -> str:
    return str(page.get("path", "")) if isinstance(page, dict) else ""
