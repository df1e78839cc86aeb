"""The data mart's records: msgspec Structs, kept apart from the code that uses them.

:mod:`gateway.datamart.sessions` and :mod:`gateway.datamart.deltas` are compiled by mypyc
(:mod:`gateway.native`), which does not build msgspec's Struct classes (their class keywords,
``kw_only=True``, are lost); here they stay ordinary Python classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from gateway.datamart.referrers import ReferrerClass

EndReason = Literal["timeout", "campaign", "midnight", "idle"]


class OpenSession(msgspec.Struct, kw_only=True):
    """A visit in progress, as kept in Redis between events (times in ms since the epoch)."""

    session_id: str
    site: str
    visitor: str
    anonymous_id: str | None = None
    user_id: str | None = None
    channel: str
    first_event_id: str
    last_event_id: str
    started: int
    last: int
    #: The next local midnight after the first event: an event at or after it starts a new visit.
    day_end: int
    #: Wall clock of the last event processed (for closing idle sessions).
    touched: int
    landing_page: str | None = None
    referrer: str | None = None
    referrer_class: ReferrerClass = "direct"
    campaign: dict[str, str] = {}
    campaign_key: str = ""
    pages: int = 0
    events: int = 0
    orders: int = 0
    revenue: float = 0.0
    device_type: str | None = None
    browser: str | None = None
    os: str | None = None


class SessionRecord(msgspec.Struct, kw_only=True):
    """A finished visit, as the sessions agent publishes it on the ``sessions`` stream."""

    session_id: str
    site: str
    #: The visitor the session was keyed on (the anonymous id, else the user id).
    visitor_id: str
    anonymous_id: str | None = None
    user_id: str | None = None
    #: The customer the identity graph held for the visitor when the session closed.
    customer_id: str | None = None
    channel: str
    started_at: datetime
    ended_at: datetime
    #: Seconds from the first to the last event.
    duration: float
    landing_page: str | None = None
    referrer: str | None = None
    referrer_class: ReferrerClass
    campaign: dict[str, str] = {}
    pages: int
    events: int
    orders: int = 0
    revenue: float = 0.0
    #: One page view and nothing else.
    bounced: bool
    #: At least one ``Order Completed``.
    converted: bool
    device_type: str | None = None
    browser: str | None = None
    os: str | None = None
    end_reason: EndReason
    first_event_id: str
    last_event_id: str


class Latest(msgspec.Struct, array_like=True):
    """A value that the latest event wins: ``raw`` (JSON, stored as is) carries ``at`` too."""

    at: int
    raw: str


class Delta(msgspec.Struct, omit_defaults=True, gc=False):
    """Operations on one customer's profile, applied together once (``id`` is the guard)."""

    id: str
    #: The other events the delta stands for (:func:`combine`): it is applied only when none
    #: of its ids was, and records them all.
    more: list[str] = []
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
