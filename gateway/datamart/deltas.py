"""What an event changes in a customer's profile, as data. Plain functions, no I/O.

A :class:`Delta` is a small set of operations (add to counters, keep the earliest/latest time,
keep the latest value, remember recent items, add to scores, note the visit) that the profile
script applies once per id. An event gives one (:func:`event_delta`); several events of one
customer give one too (:func:`combine`: applied once, all its ids at a time); folding a merged
customer into the survivor is one too (:func:`fold_delta`, from the merged profile's
snapshot), so all go through the same exactly-once path.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
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
from gateway.datamart.records import Delta, Latest, Snapshot
from gateway.events import Event

#: Integer counters of ``p`` (``revenue`` is a float; ``visits`` is counted from sessions).
COUNTERS: Final = (
    "visits", "events", "page_views", "orders", "units", "emails_opened", "emails_clicked",
)  # fmt: skip
#: Interest points per category for a view, a cart addition and a purchase.
INTEREST: Final = {"viewed": 1.0, "carted": 3.0, "bought": 5.0}
RECENT: Final = ("viewed", "carted", "bought")
SCORES: Final = ("interests", "stores")


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
    return combine([event])


_PAGES: Final = frozenset({"page", "screen"})
_BROWSE: Final = {"Product Viewed": "viewed", "Product Added": "carted"}
_EMAILS: Final = {"Email Opened": "emails_opened", "Email Link Clicked": "emails_clicked"}
_CHANGES: Final = frozenset({"Order Completed", "Order Refunded", "Consent Updated"})


class _Changes:
    """What several events of one customer change, merged as :func:`combine` says."""

    __slots__ = (
        "events", "fincr", "first", "incr", "last", "latest", "pages", "recent", "scores",
        "sessions",
    )  # fmt: skip

    def __init__(self) -> None:
        self.events = 0
        self.pages = 0
        #: Other counters (orders, units, e-mails).
        self.incr: dict[str, int] = {}
        self.fincr: dict[str, float] = {}
        #: Per channel, the earliest and the latest event time.
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        #: field → (at, value, channel, more): the JSON is made for the winner only.
        self.latest: dict[str, tuple[int, Any, str, dict[str, Any] | None]] = {}
        self.recent: dict[str, dict[str, int]] = {}
        self.scores: dict[str, dict[str, float]] = {}
        self.sessions: dict[str, int] = {}

    def add(self, event: Event) -> None:
        at, channel = int(event.timestamp.timestamp() * 1000), event.channel
        self.events += 1
        first, last = self.first, self.last
        if at < first.get(channel, at + 1):
            first[channel] = at
        if at > last.get(channel, at - 1):
            last[channel] = at
        if session := event.session_id:
            sessions = self.sessions
            if at > sessions.get(session, at - 1):
                sessions[session] = at
        type_ = event.type
        if type_ in _PAGES:
            self.pages += 1
        context = event.context
        if event.traits or "traits" in context or "timezone" in context:
            self._latest(event, at, channel)
        if type_ != "track":
            return
        name = event.name
        if (kind := _BROWSE.get(name)) is not None:  # type: ignore[arg-type]
            props = event.properties
            pid = product_id(props)
            if pid:
                items = self.recent.setdefault(kind, {})
                if at > items.get(pid, at - 1):
                    items[pid] = at
            category = text(props.get("category"))
            if category:
                self._score("interests", category, INTEREST[kind])
        elif (counter := _EMAILS.get(name)) is not None:  # type: ignore[arg-type]
            self.incr[counter] = self.incr.get(counter, 0) + 1
        elif name in _CHANGES:
            if name == "Order Completed":
                self._order(event, at)
            elif name == "Order Refunded":
                self._refund(event)
            else:
                props = event.properties
                self._consents(consents_of(props.get("consents", props)), event, at, channel)

    def _set(
        self, field: str, at: int, value: Any, channel: str, more: dict[str, Any] | None = None
    ) -> None:
        """The latest value of ``field``: a later event wins a tie, as the script's ``<=``."""
        held = self.latest.get(field)
        if held is None or held[0] <= at:
            self.latest[field] = (at, value, channel, more)

    def _latest(self, event: Event, at: int, channel: str) -> None:
        consents: list[dict[str, Any]] = []
        for traits in _traits_of(event):
            for trait, value in traits.items():
                if trait == "consent":
                    consents += consents_of(value)
                else:
                    self._set(f"trait:{trait}", at, value, channel)
        timezone = text(event.context.get("timezone"))
        if timezone:
            self._set("timezone", at, timezone, channel)
        self._consents(consents, event, at, channel)

    def _consents(
        self, consents: list[dict[str, Any]], event: Event, at: int, channel: str
    ) -> None:
        for consent in consents:
            where = text(consent.get("channel")) or "all"
            purpose = text(consent.get("purpose")) or "all"
            self._set(
                f"consent:{where}:{purpose}",
                at,
                consent["granted"],
                channel,
                {"event": event.event_id},
            )

    def _item(self, kind: str, pid: str, at: int) -> None:
        items = self.recent.setdefault(kind, {})
        if at > items.get(pid, at - 1):
            items[pid] = at

    def _score(self, kind: str, member: str, points: float) -> None:
        scores = self.scores.setdefault(kind, {})
        scores[member] = scores.get(member, 0.0) + points

    def _order(self, event: Event, at: int) -> None:
        props = event.properties
        products = products_of(props)
        incr = self.incr
        incr["orders"] = incr.get("orders", 0) + 1
        incr["units"] = incr.get("units", 0) + sum(quantity(p) for p in products)
        self.fincr["revenue"] = self.fincr.get("revenue", 0.0) + revenue_of(props)
        for product in products:
            pid = product_id(product)
            if pid:
                self._item("bought", pid, at)
        for product in products:
            category = text(product.get("category"))
            if category:
                self._score("interests", category, INTEREST["bought"])
        store = store_of(props, event.context)
        if store:
            self._score("stores", store, 1.0)

    def _refund(self, event: Event) -> None:
        """A return takes its revenue and units back (the order stays counted: it happened)."""
        props = event.properties
        self.incr["units"] = self.incr.get("units", 0) - sum(
            quantity(p) for p in products_of(props)
        )
        self.fincr["revenue"] = self.fincr.get("revenue", 0.0) - abs(revenue_of(props))

    def delta(self, events: Sequence[Event]) -> Delta:
        head = events[0]
        incr = {"events": self.events}
        if self.pages:
            incr["page_views"] = self.pages
        incr.update(self.incr)
        delta = Delta(id=head.event_id, site=head.site, incr=incr)
        if len(events) > 1:
            delta.more = [e.event_id for e in events[1:]]
        first, last = self.first, self.last
        delta.min = {f"first:{channel}": at for channel, at in first.items()}
        delta.min["first_seen"] = min(first.values())
        delta.max = {f"last:{channel}": at for channel, at in last.items()}
        delta.max["last_seen"] = max(last.values())
        if self.fincr:
            delta.fincr = self.fincr
        if self.latest:
            delta.latest = {
                field: _latest(at, value, channel, **(more or {}))
                for field, (at, value, channel, more) in self.latest.items()
            }
        if self.recent:
            delta.recent = {kind: list(items.items()) for kind, items in self.recent.items()}
        if self.scores:
            delta.scores = {kind: list(items.items()) for kind, items in self.scores.items()}
        if self.sessions:
            delta.sessions = list(self.sessions.items())
        return delta


def combine(events: Sequence[Event]) -> Delta:
    """The changes of ``events`` (one customer's, in arrival order) as one delta, equal to
    applying theirs one after the other: counters added up, the earliest and latest times, per
    trait the value of the latest event (by event time; a tie goes to the later one), recent
    items at their latest time, scores added up, each visit once."""
    changes = _Changes()
    for event in events:
        changes.add(event)
    return changes.delta(events)


#: Events one combined delta stands for at most (the script takes their ids in one call).
COMBINED_MAX: Final = 500


class Combined:
    """Events of one customer as one encoded delta (:func:`combine`), and the way back to a
    delta per event for when the profile script finds some of them applied already."""

    __slots__ = ("encoded", "events")

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.encoded = encode(combine(events))

    def rest(self, applied: Collection[str]) -> list[bytes]:
        """One delta per event not in ``applied``, in order."""
        return [encode(event_delta(e)) for e in self.events if e.event_id not in applied]


def combined(events: Sequence[Event]) -> list[Combined]:
    """One customer's events as combined deltas: an id seen twice counts once (a replayed
    entry may bring an event again), at most :data:`COMBINED_MAX` events each."""
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    kept = list(unique.values()) if len(unique) < len(events) else events
    return [Combined(kept[i : i + COMBINED_MAX]) for i in range(0, len(kept), COMBINED_MAX)]


def _traits_of(event: Event) -> list[dict[str, Any]]:
    found = []
    context_traits = event.context.get("traits")
    if isinstance(context_traits, dict):
        found.append(context_traits)
    if event.traits:
        found.append(event.traits)  # after context.traits: the call's own traits win
    return found


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
