"""Customers: the 360 page and the privacy API (admin token).

``GET /v1/customers/{id}``            the profile (data mart)
``GET /v1/customers/{id}/export``     everything held about the customer, data mart and warehouse
``DELETE /v1/customers/{id}``         erasure: gone from the data mart and the identity graph;
                                      in the warehouse facts stay only as anonymous aggregates
``POST /v1/customers/{id}/consent``   ``{"channel", "purpose", "granted"}`` as a
                                      ``Consent Updated`` event through the collector
``GET /dashboard/customers?q=``       search by e-mail, loyalty card, order number, user id
``GET /dashboard/customers/{id}``     customer 360: profile, identities, consent, segments,
                                      merges, cross-channel timeline
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from gateway import keys as K
from gateway.datamart import profiles
from gateway.datamart.profiles import Profile
from gateway.errors import EventError
from gateway.events import Event
from gateway.web.auth import require_admin
from gateway.web.dashboard import page_guard, render
from gateway.web.state import ADMIN_TOKEN, BUS, CONFIG, PUBLISHER, REDIS, WAREHOUSE

#: Warehouse tables whose rows name a customer, and the columns that do.
PERSONAL_COLUMNS = {
    "fact_event": ("customer_id", "anonymous_id", "session_id"),
    "fact_session": ("customer_id", "anonymous_id"),
    "fact_sale": ("customer_id",),
    "fact_message": ("customer_id",),
}
TIMELINE_LIMIT = 100


#: A consent's channel or purpose ("email", "marketing"...).
ConsentName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$",
    ),
]  # printable, no space at either end


class ConsentChange(msgspec.Struct, forbid_unknown_fields=True):
    channel: ConsentName
    purpose: ConsentName
    granted: bool


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/customers/{id}", get_customer)
    app.router.add_get("/v1/customers/{id}/export", export_customer)
    app.router.add_delete("/v1/customers/{id}", erase_customer)
    app.router.add_post("/v1/customers/{id}/consent", update_consent)
    app.router.add_get("/dashboard/customers", search_page)
    app.router.add_get("/dashboard/customers/{id}", customer_page)


async def _profile_or_404(request: web.Request) -> Profile:
    app = request.app
    profile = await profiles.get_profile(app[REDIS], app[BUS].keys, request.match_info["id"])
    if profile is None:
        raise web.HTTPNotFound(reason="no such customer")
    return profile


def _ids(profile: Profile) -> list[str]:
    """The customer and every id folded into it: what the warehouse may name."""
    return [profile.customer_id, *profile.merged_from]


def _of_kind(profile: Profile, kind: str) -> list[str]:
    """The customer's identifiers of one kind (``email``, ``user_id``, ``anonymous_id``...)."""
    return [i.partition(":")[2] for i in profile.identifiers if i.startswith(kind + ":")]


def _visitor_ids(profile: Profile) -> list[str]:
    return _of_kind(profile, "anonymous_id")


def _in(values: list[str], start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + len(values)))


async def get_customer(request: web.Request) -> web.Response:
    require_admin(request, request.app[ADMIN_TOKEN])
    profile = await _profile_or_404(request)
    return web.json_response(msgspec.to_builtins(profile))


async def export_customer(request: web.Request) -> web.Response:
    """An access request: the data mart's export plus every warehouse row naming the customer."""
    require_admin(request, request.app[ADMIN_TOKEN])
    app = request.app
    held = await profiles.export(app[REDIS], app[BUS].keys, request.match_info["id"])
    if held is None:
        raise web.HTTPNotFound(reason="no such customer")
    profile = await _profile_or_404(request)
    ids = _ids(profile)
    warehouse = app[WAREHOUSE]
    rows: dict[str, Any] = {}
    for table in ("dim_customer", "customer_segment", *PERSONAL_COLUMNS):
        rows[table] = await warehouse.fetch(
            f"SELECT * FROM {table} WHERE customer_id IN ({_in(ids)})", ids
        )
    held["warehouse"] = rows
    return web.json_response(msgspec.to_builtins(held))


async def erase_customer(request: web.Request) -> web.Response:
    """Erase everywhere; warehouse facts lose every identifier and stay as anonymous counts."""
    require_admin(request, request.app[ADMIN_TOKEN])
    app = request.app
    profile = await _profile_or_404(request)
    ids, visitors = _ids(profile), _visitor_ids(profile)
    warehouse = app[WAREHOUSE]
    for table in ("dim_customer", "customer_segment"):
        await warehouse.execute(f"DELETE FROM {table} WHERE customer_id IN ({_in(ids)})", ids)
    for table, columns in PERSONAL_COLUMNS.items():
        cleared = ", ".join(f"{c} = NULL" for c in columns)
        where = f"customer_id IN ({_in(ids)})"
        if "anonymous_id" in columns and visitors:
            where += f" OR anonymous_id IN ({_in(visitors, len(ids) + 1)})"
            params = [*ids, *visitors]
        else:
            params = ids
        await warehouse.execute(f"UPDATE {table} SET {cleared} WHERE {where}", params)
    erased = await profiles.erase(
        app[REDIS],
        app[BUS].keys,
        profile.customer_id,
        dedup_window=app[CONFIG].collector.dedup_window,
    )
    return web.json_response({"erased": erased, "site": profile.site})


async def update_consent(request: web.Request) -> web.Response:
    """Consent goes through the collector like any event, so it is ordered with the others."""
    require_admin(request, request.app[ADMIN_TOKEN])
    app = request.app
    try:
        change = msgspec.json.decode(await request.read(), type=ConsentChange)
    except msgspec.ValidationError as exc:
        raise EventError(str(exc).replace("`", "")) from None
    except msgspec.DecodeError as exc:
        raise EventError(f"invalid JSON: {exc}") from None
    profile = await _profile_or_404(request)
    now = datetime.now(UTC)
    user = next(iter(_of_kind(profile, "user_id")), None)
    email = next(iter(_of_kind(profile, "email")), None)
    visitor = next(iter(_visitor_ids(profile)), None)
    if not (user or email or visitor):
        raise web.HTTPConflict(reason="the customer has no identifier left to attach consent to")
    event = Event(
        event_id=uuid.uuid4().hex,
        type="track",
        name="Consent Updated",
        channel="callcenter",
        site=profile.site,
        timestamp=now,
        received_at=now,
        user_id=user,
        anonymous_id=None if user or email else visitor,
        properties=msgspec.to_builtins(change),
        context={"traits": {"email": email}} if email and not user else {},
    )
    await app[PUBLISHER].publish(K.EVENTS, [event])
    return web.json_response({"accepted": True, "event_id": event.event_id}, status=202)


# --- the dashboard's customer pages ------------------------------------------------------------


async def _find(request: web.Request, query: str) -> str | None:
    app = request.app
    redis, keys = app[REDIS], app[BUS].keys
    if await profiles.get_profile(redis, keys, query) is not None:
        return query
    kinds = ["email"] if "@" in query else ["loyalty_card", "user_id", "erp_party_id"]
    for site in app[CONFIG].sites:
        for kind in kinds:
            if found := await profiles.find_customer(redis, keys, site, kind, query):
                return found
    orders = await app[WAREHOUSE].fetch(
        "SELECT customer_id FROM fact_sale WHERE order_id = $1 AND customer_id IS NOT NULL LIMIT 1",
        [query],
    )
    return str(orders[0]["customer_id"]) if orders else None


async def search_page(request: web.Request) -> web.Response:
    page_guard(request)
    query = request.query.get("q", "").strip()
    if query:
        found = await _find(request, query)
        if found:
            raise web.HTTPFound(f"/dashboard/customers/{found}")
    return render(request, "customers.html", query=query, missed=bool(query))


async def customer_page(request: web.Request) -> web.Response:
    page_guard(request)
    app = request.app
    profile = await _profile_or_404(request)
    ids = _ids(profile)
    warehouse = app[WAREHOUSE]
    timeline = await warehouse.fetch(
        "SELECT ts, channel, type, name, path, sku, revenue, store_id FROM fact_event "
        f"WHERE customer_id IN ({_in(ids)}) ORDER BY ts DESC LIMIT {TIMELINE_LIMIT}",
        ids,
    )
    segments = await warehouse.fetch(
        f"SELECT DISTINCT segment FROM customer_segment WHERE customer_id IN ({_in(ids)})", ids
    )
    story = await profiles.explain(app[REDIS], app[BUS].keys, profile.customer_id)
    return render(
        request,
        "customer.html",
        profile=profile,
        timeline=timeline,
        segments=[row["segment"] for row in segments],
        story=story or {},
    )
