"""Visits: where a session starts and ends, and what its record says. Plain functions, no I/O.

A session belongs to one visitor (the anonymous id, else the user id) on one site. It ends
after ``collector.session_timeout`` without events (in event time), when an event brings a
different campaign (utm tags), or at midnight in the site's time zone; the sessions agent also
closes sessions idle on the wall clock (its periodic tick), so a visit ends without new traffic.
Events are taken in arrival order: one older than the session's last event joins it.

A closed session becomes a :class:`SessionRecord` on the ``sessions`` stream. A session can be
published more than once (a replay, two members racing): records are snapshots of one growing
visit, so a consumer keeps, per ``session_id``, the one with the most ``events``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import msgspec

from gateway.datamart.commerce import revenue_of
from gateway.datamart.records import EndReason, OpenSession, SessionRecord
from gateway.datamart.referrers import classify
from gateway.events import Event

#: Channels whose events are not visits: an email open, an ERP stock change.
SESSIONLESS: Final = frozenset({"email", "erp"})
CAMPAIGN_FIELDS: Final = ("source", "medium", "name", "term", "content")


@dataclass(frozen=True)
class Rules:
    """When a visit ends, for one site."""

    timeout_ms: int
    tz: tzinfo = UTC


# --- what an event says ----------------------------------------------------------------------


def ms(moment: datetime) -> int:
    """An aware datetime as milliseconds since the epoch (how times are kept in Redis)."""
    return int(moment.timestamp() * 1000)


def visitor_of(event: Event) -> str | None:
    """Whom the visit is keyed on: the anonymous id, else the user id."""
    return event.anonymous_id or event.user_id


def sessionized(event: Event) -> bool:
    """Whether the event belongs to a visit (bots, e-mail and ERP events do not)."""
    return (
        event.context.get("bot") is not True
        and event.channel not in SESSIONLESS
        and visitor_of(event) is not None
    )


def _text(value: Any) -> str | None:
    if isinstance(value, str) and (value := value.strip()):
        return value
    return None


_EMPTY: Final[dict[str, Any]] = {}


def _page(event: Event) -> dict[str, Any]:
    page = event.context.get("page")
    return page if isinstance(page, dict) else _EMPTY


def _url(page: dict[str, Any], props: dict[str, Any]) -> str | None:
    return (
        _text(page.get("url"))
        or _text(props.get("url"))
        or _text(page.get("path"))
        or _text(props.get("path"))
    )


def page_of(event: Event) -> tuple[str | None, str | None]:
    """(page URL or path, referrer) from ``context.page``, else the page properties."""
    page, props = _page(event), event.properties
    referrer = _text(page.get("referrer")) or _text(props.get("referrer"))
    return _url(page, props), referrer


def campaign_of(event: Event) -> dict[str, str]:
    """The campaign tags: ``context.campaign``, else ``utm_*`` in the page URL's query."""
    found: dict[str, str] = {}
    context = event.context
    campaign = context.get("campaign")
    if isinstance(campaign, dict):
        for field in CAMPAIGN_FIELDS:
            value = campaign.get(field)
            if isinstance(value, str | int) and str(value).strip():
                found[field] = str(value).strip()
        if found:
            return found
    props = event.properties
    page = context.get("page")
    if not isinstance(page, dict):
        page = _EMPTY
    search = props.get("search")
    if not search:
        # most events: a page URL without tags (when it is not blank, it is the one _url picks)
        url = page.get("url")
        if isinstance(url, str) and url and "utm_" not in url and not url.isspace():
            return found
        url = _url(page, props)
        if url is None or "utm_" not in url:
            return found  # nowhere for utm tags to be
    else:
        url = _url(page, props)
    query = (urlsplit(url).query if url and "?" in url else "") or str(search or "").lstrip("?")
    if "utm_" not in query:
        return found
    for key, value in parse_qsl(query):
        if key.startswith("utm_") and value.strip():
            field = "name" if key == "utm_campaign" else key[4:]
            if field in CAMPAIGN_FIELDS:
                found[field] = value.strip()
    return found


def campaign_key(campaign: dict[str, str]) -> str:
    """What must stay the same for events to share a visit: source, medium and name."""
    return "|".join(campaign.get(f, "").lower() for f in ("source", "medium", "name"))


def session_id_for(site: str, visitor: str, first_event_id: str) -> str:
    """Deterministic, so a replay names the same session."""
    digest = hashlib.blake2b(f"{site}:{visitor}:{first_event_id}".encode(), digest_size=8)
    return "s_" + digest.hexdigest()


def next_midnight(ts_ms: int, tz: tzinfo) -> int:
    """The first local midnight after ``ts_ms``, in ms (DST-aware)."""
    end = _midnight_after(ts_ms - ts_ms % _QUARTER, tz)  # the quarter hour's, cached
    return end if end > ts_ms else _midnight_after(ts_ms, tz)


#: The cache's step: time zones are whole quarter hours from UTC, so all the instants of a
#: quarter hour share its next midnight, but for one that is that midnight (then it is worked
#: out exactly).
_QUARTER: Final = 900_000


@functools.lru_cache(maxsize=4096)
def _midnight_after(ts_ms: int, tz: tzinfo) -> int:
    local = datetime.fromtimestamp(ts_ms / 1000, tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
    return ms(midnight)


# --- the rules -------------------------------------------------------------------------------


def boundary(
    state: OpenSession, ts: int, campaign: dict[str, str], rules: Rules
) -> EndReason | None:
    """Why the event at ``ts`` (carrying ``campaign``) cannot join ``state``; None if it can."""
    if ts - state.last > rules.timeout_ms:
        return "timeout"
    if ts >= state.day_end:
        return "midnight"
    if campaign and campaign_key(campaign) != state.campaign_key:
        return "campaign"
    return None


def open_session(
    event: Event, ts: int, campaign: dict[str, str], rules: Rules, now_ms: int
) -> OpenSession:
    """A new visit starting with ``event`` (its landing page, referrer and campaign)."""
    visitor = visitor_of(event) or ""
    url, referrer = page_of(event)
    return OpenSession(
        session_id=session_id_for(event.site, visitor, event.event_id),
        site=event.site,
        visitor=visitor,
        anonymous_id=event.anonymous_id,
        user_id=event.user_id,
        channel=event.channel,
        first_event_id=event.event_id,
        last_event_id=event.event_id,
        started=ts,
        last=ts,
        day_end=next_midnight(ts, rules.tz),
        touched=now_ms,
        landing_page=url,
        referrer=referrer,
        referrer_class=classify(
            referrer,
            medium=campaign.get("medium"),
            source=campaign.get("source"),
            page=url or "",  # its host is only parsed when there is a referrer
        ),
        campaign=campaign,
        campaign_key=campaign_key(campaign),
    )


def add(state: OpenSession, event: Event, ts: int, now_ms: int) -> None:
    """Count ``event`` into ``state`` (in place)."""
    state.events += 1
    state.touched = now_ms
    if ts >= state.last:
        state.last = ts
        state.last_event_id = event.event_id
    if ts < state.started:
        state.started = ts
    type_ = event.type
    if type_ == "page" or type_ == "screen":
        state.pages += 1
    elif type_ == "track" and event.name == "Order Completed":
        state.orders += 1
        state.revenue += revenue_of(event.properties)
    if state.user_id is None and event.user_id:
        state.user_id = event.user_id
    if state.device_type is None:
        ua = event.context.get("userAgentData")
        ua = ua if isinstance(ua, dict) else {}
        device = event.context.get("device")
        device = device if isinstance(device, dict) else {}
        os_info = event.context.get("os")
        os_info = os_info if isinstance(os_info, dict) else {}
        state.device_type = _text(ua.get("deviceType")) or _text(device.get("type"))
        state.browser = _text(ua.get("browser"))
        state.os = _text(ua.get("os")) or _text(os_info.get("name"))


def advance(
    state: OpenSession | None, event: Event, rules: Rules, now_ms: int
) -> tuple[OpenSession, SessionRecord | None]:
    """The visit ``event`` belongs to, and the record of the one it ended (if it ended one)."""
    ts = int(event.timestamp.timestamp() * 1000)  # ms(), inline: this runs for every event
    campaign = campaign_of(event)
    closed = None
    if state is not None and (reason := boundary(state, ts, campaign, rules)) is not None:
        closed = close(state, reason)
        state = None
    if state is None:
        state = open_session(event, ts, campaign, rules, now_ms)
    add(state, event, ts, now_ms)
    return state, closed


def close(state: OpenSession, reason: EndReason, customer_id: str | None = None) -> SessionRecord:
    """The record of a visit that ended, for the ``sessions`` stream."""
    return SessionRecord(
        session_id=state.session_id,
        site=state.site,
        visitor_id=state.visitor,
        anonymous_id=state.anonymous_id,
        user_id=state.user_id,
        customer_id=customer_id,
        channel=state.channel,
        started_at=datetime.fromtimestamp(state.started / 1000, UTC),
        ended_at=datetime.fromtimestamp(state.last / 1000, UTC),
        duration=(state.last - state.started) / 1000,
        landing_page=state.landing_page,
        referrer=state.referrer,
        referrer_class=state.referrer_class,
        campaign=state.campaign,
        pages=state.pages,
        events=state.events,
        orders=state.orders,
        revenue=round(state.revenue, 4),
        bounced=state.pages == 1 and state.events == 1,
        converted=state.orders > 0,
        device_type=state.device_type,
        browser=state.browser,
        os=state.os,
        end_reason=reason,
        first_event_id=state.first_event_id,
        last_event_id=state.last_event_id,
    )


# --- packing ---------------------------------------------------------------------------------

_encoder: Final = msgspec.msgpack.Encoder()
_state_decoder: Final = msgspec.msgpack.Decoder(OpenSession)
_records_decoder: Final = msgspec.msgpack.Decoder(list[SessionRecord])


def pack_state(state: OpenSession) -> bytes:
    """An open session as stored in Redis (msgpack)."""
    return _encoder.encode(state)


def unpack_state(value: bytes) -> OpenSession:
    """Inverse of :func:`pack_state`."""
    return _state_decoder.decode(value)


def pack_records(records: Sequence[SessionRecord]) -> bytes:
    """Records → one ``sessions`` stream entry value (under ``keys.ENTRY_FIELD``)."""
    return _encoder.encode(records)


def unpack_records(value: bytes) -> list[SessionRecord]:
    """Inverse of :func:`pack_records` (what sync reads from an entry's ``raw``)."""
    return _records_decoder.decode(value)
