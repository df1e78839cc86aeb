"""What an event changes in a customer's profile, as data. Plain functions, no I/O.

A :class:`Delta` is a small set of operations (add to counters, keep the earliest/latest time,
keep the latest value, remember recent items, add to scores, note the visit) that the profile
script applies once per id. An event gives one (:func:`event_delta`); folding a merged
customer into the survivor is one too (:func:`fold_delta`, from the merged profile's
snapshot), so both go through the same exactly-once path.
"""

from __future__ import annotations

import json
from typing import Any, Final

import msgspec

from gateway.datamart.commerce import (
    product_id,
    products_of,
    quantity,
    revenue_of,
    store_of,
    text,
)
from gateway.datamart.sessions import ms
from gateway.events import Event

#: Integer counters of ``p`` (``revenue`` is a float; ``visits`` is counted from sessions).
COUNTERS: Final = (
    "visits", "events", "page_views", "orders", "units", "emails_opened", "emails_clicked",
)  # fmt: skip
#: Interest points per category for a view, a cart addition and a purchase.
INTEREST: Final = {"viewed": 1.0, "carted": 3.0, "bought": 5.0}
RECENT: Final = ("viewed", "carted", "bought")
SCORES: Final = ("interests", "stores")


class Latest(msgspec.Struct, array_like=True):
    """A value that the latest event wins: ``raw`` (JSON, stored as is) carries ``at`` too."""

    at: int
    raw: str


class Delta(msgspec.Struct, omit_defaults=True):
    """Operations on one customer's profile, applied together once (``id`` is the guard)."""

    id: str
    site: str | None = None
    incr: dict[str, int] = {}
    fincr: dict[str, float] = {}
    min: dict[str, int] = {}
    max: dict[str, int] = {}
    latest: dict[str, Latest] = {}
    recent: dict[str, list[tuple[str, int]]] = {}
    scores: dict[str, list[tuple[str, float]]] = {}
    sessions: list[tuple[str, int]] = []
    #: Folds only: the merged customer's visits (sessions both knew are counted once).
    visits: int | None = None
    #: Folds only: the merged customer's processed event ids, so their replays stay absorbed.
    done: list[tuple[str, float]] = []


_encoder: Final = msgspec.json.Encoder()


def encode(delta: Delta) -> bytes:
    """A delta as the profile script takes it (JSON, for Lua's cjson)."""
    return _encoder.encode(delta)


def _latest(at: int, value: Any, channel: str, **more: Any) -> Latest:
    raw = _encoder.encode({"v": value, "at": at, "ch": channel, **more}).decode()
    return Latest(at, raw)


def consents_of(value: Any) -> list[dict[str, Any]]:
    """``{channel, purpose, granted}`` items of a consent trait or event (one or a list)."""
    items = value if isinstance(value, list) else [value]
    return [i for i in items if isinstance(i, dict) and isinstance(i.get("granted"), bool)]


def event_delta(event: Event) -> Delta:
    """The changes ``event`` makes to its customer's profile."""
    at, channel, props = ms(event.timestamp), event.channel, event.properties
    delta = Delta(id=event.event_id, site=event.site, incr={"events": 1})
    delta.min = {"first_seen": at, f"first:{channel}": at}
    delta.max = {"last_seen": at, f"last:{channel}": at}
    if event.session_id:
        delta.sessions = [(event.session_id, at)]
    if event.type in ("page", "screen"):
        delta.incr["page_views"] = 1
    latest: dict[str, Latest] = {}
    consents: list[dict[str, Any]] = []
    for traits in _traits_of(event):
        for trait, value in traits.items():
            if trait == "consent":
                consents += consents_of(value)
            else:
                latest[f"trait:{trait}"] = _latest(at, value, channel)
    timezone = text(event.context.get("timezone"))
    if timezone:
        latest["timezone"] = _latest(at, timezone, channel)
    name = event.name if event.type == "track" else None
    if name == "Consent Updated":
        consents += consents_of(props.get("consents", props))
    for consent in consents:
        where = text(consent.get("channel")) or "all"
        purpose = text(consent.get("purpose")) or "all"
        latest[f"consent:{where}:{purpose}"] = _latest(
            at, consent["granted"], channel, event=event.event_id
        )
    delta.latest = latest
    if name == "Order Completed":
        _order(delta, event, at)
    elif name == "Order Refunded":
        _refund(delta, event)
    elif name in ("Product Viewed", "Product Added"):
        _browse(delta, props, "viewed" if name == "Product Viewed" else "carted", at)
    elif name == "Email Opened":
        delta.incr["emails_opened"] = 1
    elif name == "Email Link Clicked":
        delta.incr["emails_clicked"] = 1
    return delta


def _traits_of(event: Event) -> list[dict[str, Any]]:
    found = []
    context_traits = event.context.get("traits")
    if isinstance(context_traits, dict):
        found.append(context_traits)
    if event.traits:
        found.append(event.traits)  # after context.traits: the call's own traits win
    return found


def _browse(delta: Delta, props: dict[str, Any], kind: str, at: int) -> None:
    pid = product_id(props)
    if pid:
        delta.recent = {kind: [(pid, at)]}
    category = text(props.get("category"))
    if category:
        delta.scores = {"interests": [(category, INTEREST[kind])]}


def _order(delta: Delta, event: Event, at: int) -> None:
    props = event.properties
    products = products_of(props)
    delta.incr["orders"] = 1
    delta.incr["units"] = sum(quantity(p) for p in products)
    delta.fincr = {"revenue": revenue_of(props)}
    bought = [(pid, at) for p in products if (pid := product_id(p))]
    if bought:
        delta.recent = {"bought": bought}
    interests: dict[str, float] = {}
    for product in products:
        category = text(product.get("category"))
        if category:
            interests[category] = interests.get(category, 0.0) + INTEREST["bought"]
    scores: dict[str, list[tuple[str, float]]] = {}
    if interests:
        scores["interests"] = list(interests.items())
    store = store_of(props, event.context)
    if store:
        scores["stores"] = [(store, 1.0)]
    delta.scores = scores


def _refund(delta: Delta, event: Event) -> None:
    """A return takes its revenue and units back (the order stays counted: it happened)."""
    props = event.properties
    delta.incr["units"] = -sum(quantity(p) for p in products_of(props))
    delta.fincr = {"revenue": -abs(revenue_of(props))}


class Snapshot(msgspec.Struct, kw_only=True):
    """A sealed (merged) customer's whole profile, as the seal script returns it."""

    into: str
    p: dict[str, str] = {}
    attr: dict[str, str] = {}
    viewed: list[tuple[str, float]] = []
    carted: list[tuple[str, float]] = []
    bought: list[tuple[str, float]] = []
    interests: list[tuple[str, float]] = []
    stores: list[tuple[str, float]] = []
    sessions: list[tuple[str, float]] = []
    done: list[tuple[str, float]] = []


def fold_delta(merged: str, snap: Snapshot) -> Delta:
    """The changes that fold the merged customer's profile into the survivor's, once."""
    p = snap.p
    delta = Delta(id=f"merge:{merged}")
    delta.incr = {c: int(p[c]) for c in COUNTERS if c != "visits" and c in p}
    if "revenue" in p:
        delta.fincr = {"revenue": float(p["revenue"])}
    delta.min = {f: int(v) for f, v in p.items() if f == "first_seen" or f.startswith("first:")}
    delta.max = {f: int(v) for f, v in p.items() if f == "last_seen" or f.startswith("last:")}
    delta.latest = {f: Latest(int(json.loads(raw)["at"]), raw) for f, raw in snap.attr.items()}
    delta.recent = {
        kind: [(m, int(s)) for m, s in items]
        for kind, items in (
            ("viewed", snap.viewed),
            ("carted", snap.carted),
            ("bought", snap.bought),
        )
        if items
    }
    delta.scores = {
        kind: items
        for kind, items in (("interests", snap.interests), ("stores", snap.stores))
        if items
    }
    delta.sessions = [(s, int(t)) for s, t in snap.sessions]
    delta.visits = int(p.get("visits", 0))
    delta.done = snap.done
    return delta
