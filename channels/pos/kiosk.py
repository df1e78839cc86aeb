"""The in-store kiosk: ``GET /kiosk/{store}`` (a touch screen) and the JSON API it calls.

A kiosk is a device with a bearer token of its own (``stores.<store>.kiosks.<id>.token``).
A customer scans or types a loyalty card (or an e-mail); the kiosk greets them by first name,
shows offers in stock at this store, looks products up (price, stock here and in the other
stores) and issues a coupon, shown or sent. Answers carry a first name, products and coupons,
never an e-mail, an identifier or a history: whoever stands at the kiosk learns nothing the
card does not already stand for.

The server keeps one thing per open session: ``kiosk_session(id)`` (store, kiosk, customer id),
expiring after ``2 * pos.kiosk_idle``; everything else lives in the page and is wiped when it
returns to idle. Every step is an event on channel ``kiosk`` and the store's site.

Recommendations are scored here until the decision API exists: category interest plus recent
views, bought items left out, in stock at this store only (:func:`recommend`, no I/O).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import jinja2
import msgspec
from aiohttp import web

from channels.pos import coupons
from gateway import keys as K
from gateway.config import Config
from gateway.datamart.lua import text
from gateway.datamart.profiles import Profile, find_customer, get_profile
from gateway.erp import stock
from gateway.events import Event
from gateway.warehouse import Warehouse
from gateway.web.auth import client_bytes
from gateway.web.state import BUS, CONFIG, COUNTERS, PUBLISHER, REDIS, WAREHOUSE
from gateway.web.templates import environment

log = logging.getLogger(__name__)

#: Products read from the warehouse to score, twice: what this store holds most of, and what
#: is here in the customer's categories or among their recent views (a catalogue of 100,000
#: SKUs is never read whole). The decision API will replace this.
MAX_CANDIDATES: Final = 500
#: Categories of the customer's interests looked at (the strongest).
MAX_INTERESTS: Final = 20
MAX_RESULTS: Final = 12
#: What a view of a product adds to its score, newest first (the category's interest is added).
VIEW_WEIGHTS: Final = (3.0, 2.0, 1.5, 1.0)
#: Where a coupon can go: shown on screen, or sent (delivery comes with the e-mail channel).
SendBy = Literal["screen", "email", "sms"]
COUPON_DISCOUNT: Final = 10

CANDIDATES_SQL = """
SELECT p.sku, p.name, p.category, p.price, p.currency, s.quantity AS here
FROM dim_product p JOIN product_stock s ON s.sku = p.sku
WHERE s.location = $1 AND s.quantity > 0 AND p.active{wanted}
ORDER BY s.quantity DESC, p.sku LIMIT {limit}"""
SEARCH_SQL = f"""
SELECT sku, name, category, price, currency FROM dim_product
WHERE active AND (lower(name) LIKE $1 OR lower(sku) LIKE $1) ORDER BY name LIMIT {MAX_RESULTS}"""
STORES_SQL = "SELECT store_id, name FROM dim_store ORDER BY store_id"


@dataclass(frozen=True)
class Kiosk:
    kiosk: str
    store: str
    site: str
    token: str


KIOSKS: Final = web.AppKey("kiosks", dict[str, Kiosk])
PAGES: Final = web.AppKey("kiosk_templates", jinja2.Environment)
T = TypeVar("T")


class Identify(msgspec.Struct, forbid_unknown_fields=True):
    card: str | None = None
    email: str | None = None


class CouponRequest(msgspec.Struct, forbid_unknown_fields=True):
    session: str
    send_by: SendBy = "screen"


class End(msgspec.Struct, forbid_unknown_fields=True):
    session: str
    reason: Literal["idle", "done"] = "done"


def setup(app: web.Application) -> None:
    app[KIOSKS] = kiosks(app[CONFIG])
    app[PAGES] = environment("kiosk")
    app.router.add_get("/kiosk/{store}", page)
    app.router.add_post("/v1/kiosk/{store}/identify", identify)
    app.router.add_get("/v1/kiosk/{store}/products", products)
    app.router.add_post("/v1/kiosk/{store}/coupon", coupon)
    app.router.add_post("/v1/kiosk/{store}/end", end)


def kiosks(config: Config) -> dict[str, Kiosk]:
    """Every configured kiosk by id; one without a token gets a random one for this run."""
    found: dict[str, Kiosk] = {}
    for name, store in config.stores.items():
        for kiosk, settings in store.kiosks.items():
            if settings.token.is_set:
                token = settings.token.get()
            else:
                token = secrets.token_urlsafe(24)
                env = settings.token.env or f"stores.{name}.kiosks.{kiosk}.token"
                log.warning(
                    "kiosk %s: token not set (%s); this run's page: /kiosk/%s?token=%s",
                    kiosk, env, name, token,
                )  # fmt: skip
            found[kiosk] = Kiosk(kiosk, name, store.site, token)
    return found


def authenticate(request: web.Request) -> Kiosk:
    """The kiosk whose bearer token the request carries (401), if it belongs here (403)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    match = None
    if scheme.lower() == "bearer" and given:
        for kiosk in request.app[KIOSKS].values():
            if hmac.compare_digest(client_bytes(given), kiosk.token.encode()):
                match = kiosk
    if match is None:
        raise web.HTTPUnauthorized(
            reason="kiosk token required (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": 'Bearer realm="touchpoint-kiosk"'},
        )
    if match.store != request.match_info["store"]:
        raise web.HTTPForbidden(reason=f"kiosk {match.kiosk} belongs to another store")
    return match


# --- logic without I/O ---------------------------------------------------------------------------


def first_name(profile: Profile | None) -> str | None:
    """The customer's first name from their traits (``firstName``, else the first word of
    ``name``); never anything else about them."""
    if profile is None:
        return None
    for trait in ("firstName", "first_name"):
        if trait in profile.traits and str(profile.traits[trait].value).strip():
            return str(profile.traits[trait].value).strip()
    if "name" in profile.traits:
        words = str(profile.traits["name"].value).split()
        return words[0] if words else None
    return None


def greeting(name: str | None, store_name: str) -> str:
    return f"Hello {name}, welcome back!" if name else f"Welcome to {store_name}!"


async def candidates(
    warehouse: Warehouse, store: str, profile: Profile | None
) -> list[dict[str, Any]]:
    """Products in stock at ``store`` worth scoring: what it holds most of, and (for a known
    customer) what it has in their strongest categories or among their recent views."""
    found = await warehouse.fetch(CANDIDATES_SQL.format(wanted="", limit=MAX_CANDIDATES), [store])
    if profile is not None:
        categories = list(profile.interests)[:MAX_INTERESTS]
        skus = [item.product_id for item in profile.viewed]
        if categories or skus:
            marks = [f"${n}" for n in range(2, 2 + len(categories) + len(skus))]
            tests = []
            if categories:
                tests.append(f"p.category IN ({', '.join(marks[: len(categories)])})")
            if skus:
                tests.append(f"p.sku IN ({', '.join(marks[len(categories) :])})")
            sql = CANDIDATES_SQL.format(wanted=f" AND ({' OR '.join(tests)})", limit=MAX_CANDIDATES)
            found += await warehouse.fetch(sql, [store, *categories, *skus])
    return list({p["sku"]: p for p in found}.values())


def recommend(
    products: list[dict[str, Any]],
    profile: Profile | None,
    here: dict[str, float],
    limit: int,
) -> list[dict[str, Any]]:
    """The ``limit`` products to offer: scored by the category's interest plus recent views,
    bought items left out, only what ``here`` (SKU → units at this store) has on hand. Without
    a profile: what the store holds most of (non-personal)."""
    interests = profile.interests if profile else {}
    views: dict[str, float] = {}
    for position, item in enumerate(profile.viewed if profile else []):
        weight = VIEW_WEIGHTS[min(position, len(VIEW_WEIGHTS) - 1)]
        views[item.product_id] = views.get(item.product_id, 0.0) + weight
    bought = {item.product_id for item in profile.bought} if profile else set()
    scored = [
        (interests.get(p["category"] or "", 0.0) + views.get(p["sku"], 0.0), p)
        for p in products
        if p["sku"] not in bought and here.get(p["sku"], 0.0) > 0
    ]
    scored.sort(key=lambda s: (-s[0], -here[s[1]["sku"]], s[1]["sku"]))
    return [p for _, p in scored[:limit]]


def product_json(product: dict[str, Any], levels: dict[str, float], store: str) -> dict[str, Any]:
    """What the screen shows of a product: price, units here and in the other stores."""
    return {
        "sku": product["sku"],
        "name": product["name"],
        "category": product["category"],
        "price": float(product["price"]),
        "currency": product["currency"],
        "here": levels.get(store, 0.0),
        "elsewhere": {loc: q for loc, q in sorted(levels.items()) if loc not in (store, "web")},
    }


def kiosk_event(kiosk: Kiosk, session: str, name: str, properties: dict[str, Any]) -> Event:
    now = datetime.now(UTC)
    return Event(
        event_id=str(uuid.uuid4()),
        type="track",
        name=name,
        channel="kiosk",
        site=kiosk.site,
        timestamp=now,
        received_at=now,
        anonymous_id=f"ks-{session}",
        properties={"store_id": kiosk.store, "kiosk_id": kiosk.kiosk, **properties},
        context={"kiosk": {"id": kiosk.kiosk, "store": kiosk.store, "session": session}},
    )


# --- handlers ------------------------------------------------------------------------------------


async def page(request: web.Request) -> web.Response:
    """The touch screen; it holds no data until a kiosk token calls the API."""
    store = request.match_info["store"]
    config = request.app[CONFIG]
    if store not in config.stores:
        raise web.HTTPNotFound(reason="no such store")
    html = (
        request.app[PAGES]
        .get_template("kiosk.html")
        .render(
            store=store,
            store_name=config.stores[store].name or store,
            idle_seconds=config.pos.kiosk_idle,
            has_kiosks=bool(config.stores[store].kiosks),
        )
    )
    return web.Response(text=html, content_type="text/html")


async def identify(request: web.Request) -> web.Response:
    kiosk = authenticate(request)
    body = _decode(await request.read(), Identify)
    if bool(body.card) == bool(body.email):
        raise web.HTTPBadRequest(reason="send one of card or email")
    app = request.app
    config = app[CONFIG]
    redis, keys = app[REDIS], app[BUS].keys
    kind, value = ("loyalty_card", body.card) if body.card else ("email", body.email)
    assert value is not None
    customer = await find_customer(redis, keys, kiosk.site, kind, value)
    profile = await get_profile(redis, keys, customer) if customer else None
    session = secrets.token_urlsafe(16)
    await redis.hset(
        keys.kiosk_session(session),
        mapping={"store": kiosk.store, "kiosk": kiosk.kiosk, "customer": customer or ""},
    )
    await redis.expire(keys.kiosk_session(session), _ttl(config))
    catalogue = await candidates(app[WAREHOUSE], kiosk.store, profile)
    here = {p["sku"]: float(p["here"]) for p in catalogue}
    if not await stock.trusted(redis, keys, config.erp):
        here = {}  # stale stock offers nothing (erp.stale_stock = "skip")
    offers = recommend(catalogue, profile, here, config.pos.kiosk_offers)
    # The stock cache has the last word (the warehouse row may be a sync behind).
    levels = await stock.levels_of(redis, keys, [p["sku"] for p in offers])
    offers = [p for p in offers if levels[p["sku"]].get(kiosk.store, 0.0) > 0]
    name = first_name(profile)
    traits: dict[str, Any] = {}
    if profile is not None:  # only a known customer's identifier joins the session to them
        traits = {"loyaltyCard": value} if kind == "loyalty_card" else {"email": value}
    started = kiosk_event(
        kiosk, session, "Kiosk Session Started",
        {"identified_by": "card" if kind == "loyalty_card" else "email", "known": bool(profile),
         "offers": [p["sku"] for p in offers]},
    )  # fmt: skip
    if traits:
        started.context["traits"] = traits
    await _publish(request, started)
    return web.json_response(
        {
            "session": session,
            "greeting": greeting(name, config.stores[kiosk.store].name or kiosk.store),
            "first_name": name,
            "known": profile is not None,
            "offers": [product_json(p, levels[p["sku"]], kiosk.store) for p in offers],
            "send_by": _send_by(profile),
        }
    )


async def products(request: web.Request) -> web.Response:
    kiosk = authenticate(request)
    query = request.query.get("q", "").strip()
    if not 1 <= len(query) <= 100:
        raise web.HTTPBadRequest(reason="q: 1 to 100 characters")
    app = request.app
    redis, keys = app[REDIS], app[BUS].keys
    pattern = "%" + query.lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
    found = await app[WAREHOUSE].fetch(SEARCH_SQL, [pattern])
    levels = await stock.levels_of(redis, keys, [p["sku"] for p in found])
    stores = {row["store_id"]: row["name"] for row in await app[WAREHOUSE].fetch(STORES_SQL)}
    session = request.query.get("session", "")
    if session and await redis.exists(keys.kiosk_session(session)):
        await redis.expire(keys.kiosk_session(session), _ttl(app[CONFIG]))
    else:
        session = f"anon-{kiosk.kiosk}"
    await _publish(
        request,
        kiosk_event(kiosk, session, "Product Searched", {"query": query, "results": len(found)}),
    )
    return web.json_response(
        {
            "query": query,
            "results": [product_json(p, levels[p["sku"]], kiosk.store) for p in found],
            "stores": {k: v for k, v in stores.items() if k != "web"},
        }
    )


async def coupon(request: web.Request) -> web.Response:
    kiosk = authenticate(request)
    body = _decode(await request.read(), CouponRequest)
    app = request.app
    redis, keys = app[REDIS], app[BUS].keys
    state = await _session(request, kiosk, body.session)
    customer = state.get("customer", "")
    if body.send_by != "screen":
        profile = await get_profile(redis, keys, customer) if customer else None
        if body.send_by not in _send_by(profile):
            raise web.HTTPBadRequest(reason=f"send_by: no {body.send_by} known for this customer")
    code = "K" + secrets.token_hex(4).upper()
    await coupons.issue(
        redis, keys, code, app[CONFIG].pos.coupon_valid,
        store=kiosk.store, kiosk=kiosk.kiosk, session=body.session,
        discount_percent=COUPON_DISCOUNT,
    )  # fmt: skip
    properties = {"coupon": code, "discount_percent": COUPON_DISCOUNT, "send_by": body.send_by}
    await _publish(request, kiosk_event(kiosk, body.session, "Coupon Issued", properties))
    return web.json_response(
        {"coupon": code, "discount_percent": COUPON_DISCOUNT, "send_by": body.send_by}
    )


async def end(request: web.Request) -> web.Response:
    kiosk = authenticate(request)
    body = _decode(await request.read(), End)
    redis, keys = request.app[REDIS], request.app[BUS].keys
    found = await redis.hget(keys.kiosk_session(body.session), "kiosk")
    if found is None or text(found) != kiosk.kiosk:
        return web.json_response({"ended": False})  # expired already: nothing to end
    await redis.delete(keys.kiosk_session(body.session))
    await _publish(
        request, kiosk_event(kiosk, body.session, "Kiosk Session Ended", {"reason": body.reason})
    )
    return web.json_response({"ended": True})


# --- helpers -------------------------------------------------------------------------------------


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    except msgspec.DecodeError:
        raise web.HTTPBadRequest(reason="body: not JSON") from None


def _ttl(config: Config) -> int:
    return max(60, int(2 * config.pos.kiosk_idle))


def _send_by(profile: Profile | None) -> list[str]:
    """Where a coupon may go for this customer, without saying the address."""
    ways = ["screen"]
    if profile is not None:
        if any(i.startswith("email:") for i in profile.identifiers) or "email" in profile.traits:
            ways.append("email")
        if "phone" in profile.traits:
            ways.append("sms")
    return ways


async def _session(request: web.Request, kiosk: Kiosk, session: str) -> dict[str, str]:
    """The open session's fields (404 when it ended, expired or is another kiosk's)."""
    redis, keys = request.app[REDIS], request.app[BUS].keys
    found = await redis.hgetall(keys.kiosk_session(session))
    state = {text(k): text(v) for k, v in found.items()}
    if state.get("kiosk") != kiosk.kiosk:
        raise web.HTTPNotFound(reason="no such session (it ended or expired)")
    await redis.expire(keys.kiosk_session(session), _ttl(request.app[CONFIG]))
    return state


async def _publish(request: web.Request, event: Event) -> None:
    await request.app[PUBLISHER].publish(K.EVENTS, [event])
    counters = request.app[COUNTERS]
    counters.received["kiosk"] = counters.received.get("kiosk", 0) + 1
