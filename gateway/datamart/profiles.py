"""The data mart's read API: a customer's profile (customer 360), look-ups, export, erasure.

Used by the dashboard and the privacy API. Ids of customers merged into another resolve to
the survivor. Raw e-mail addresses and phone numbers stay here (they are needed for sending);
the warehouse holds them hashed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis

from gateway.bus import execute
from gateway.datamart import identity
from gateway.datamart.deltas import COUNTERS
from gateway.datamart.identifiers import KINDS, normalize
from gateway.datamart.lua import pairs, scored, text
from gateway.datamart.sessions import unpack_state
from gateway.keys import Keys

MAX_HOPS: Final = 32


class Counters(msgspec.Struct, kw_only=True):
    """A customer's counters across every channel."""

    visits: int = 0
    events: int = 0
    page_views: int = 0
    orders: int = 0
    revenue: float = 0.0
    units: int = 0
    emails_opened: int = 0
    emails_clicked: int = 0


class Seen(msgspec.Struct):
    """First and last contact on one channel."""

    first: datetime | None = None
    last: datetime | None = None


class Trait(msgspec.Struct):
    """A trait's latest value, when it was set and on which channel."""

    value: Any
    at: datetime
    channel: str


class Consent(msgspec.Struct, kw_only=True):
    """The latest consent for one channel and purpose ("all" when the event named none)."""

    channel: str
    purpose: str
    granted: bool
    at: datetime
    source: str
    event_id: str | None = None


class Item(msgspec.Struct):
    """A product in a recent list, with when it was last viewed, carted or bought."""

    product_id: str
    at: datetime


class Profile(msgspec.Struct, kw_only=True):
    """One customer across every channel."""

    customer_id: str
    site: str
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    counters: Counters
    #: First and last contact per channel.
    channels: dict[str, Seen] = {}
    traits: dict[str, Trait] = {}
    #: By ``"<channel>:<purpose>"``.
    consent: dict[str, Consent] = {}
    #: Newest first.
    viewed: list[Item] = []
    carted: list[Item] = []
    bought: list[Item] = []
    #: Category → score, highest first.
    interests: dict[str, float] = {}
    #: Store → purchases, most first.
    stores: dict[str, int] = {}
    preferred_store: str | None = None
    timezone: str | None = None
    #: ``kind:value`` (raw e-mails included).
    identifiers: list[str] = []
    #: Customers folded into this one.
    merged_from: list[str] = []


def _time(ms: float | str) -> datetime:
    return datetime.fromtimestamp(float(ms) / 1000, UTC)


async def locate(client: aioredis.Redis, keys: Keys, customer_id: str) -> tuple[str, str] | None:
    """(survivor id, site) of a customer id; None when nothing is known about it."""
    current = customer_id
    for _ in range(MAX_HOPS):
        site, into = await client.hmget(keys.profile(current, "p"), ["site", "merged_into"])
        if not site:
            return None
        site = text(site)
        into = into or await client.hget(keys.identity_customer(site, current), "merged_into")
        if not into:
            return current, site
        current = text(into)
    return None


async def find_customer(
    client: aioredis.Redis, keys: Keys, site: str, kind: str, value: str
) -> str | None:
    """The customer an identifier belongs to (kind: one of ``identifiers.KINDS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown identifier kind {kind!r} (one of: {', '.join(KINDS)})")
    normal = normalize(kind, value)
    if normal is None:
        return None
    found = await client.get(keys.identifier(site, kind, normal))
    return text(found) if found else None


async def get_profile(client: aioredis.Redis, keys: Keys, customer_id: str) -> Profile | None:
    """The profile of ``customer_id`` (or of the customer it was merged into)."""
    located = await locate(client, keys, customer_id)
    if located is None:
        return None
    customer, site = located
    return _profile_of(customer, site, await execute(client, _reads(keys, customer, site)))


async def get_profiles(
    client: aioredis.Redis, keys: Keys, customer_ids: Iterable[str]
) -> dict[str, Profile]:
    """Profiles of many customers in three pipelined round trips, not three per customer (the
    sync agent snapshots every customer a batch touched). Keyed by the id asked for; a merged
    id (rare) is resolved one by one through :func:`get_profile`."""
    ids = list(dict.fromkeys(customer_ids))
    heads = await execute(
        client, [(b"HMGET", keys.profile(c, "p"), b"site", b"merged_into") for c in ids]
    )
    known = [(c, text(site), into) for c, (site, into) in zip(ids, heads, strict=True) if site]
    pointers = await execute(
        client,
        [(b"HGET", keys.identity_customer(site, c), b"merged_into") for c, site, _ in known],
    )
    direct = [
        (c, site) for (c, site, into), p in zip(known, pointers, strict=True) if not (into or p)
    ]
    merged = [c for (c, _, into), p in zip(known, pointers, strict=True) if into or p]
    replies = await execute(client, [r for c, site in direct for r in _reads(keys, c, site)])
    found: dict[str, Profile] = {}
    for i, (customer, site) in enumerate(direct):
        found[customer] = _profile_of(customer, site, replies[i * _READS : (i + 1) * _READS])
    for customer in merged:
        if (profile := await get_profile(client, keys, customer)) is not None:
            found[customer] = profile
    return found


_ZSETS: Final = ("viewed", "carted", "bought", "interests", "stores")
#: Commands :func:`_reads` gives per customer.
_READS: Final = 4 + len(_ZSETS)


def _reads(keys: Keys, customer: str, site: str) -> list[tuple[Any, ...]]:
    """The commands that read a profile (raw replies: :func:`_profile_of` takes them)."""
    return [
        (b"HGETALL", keys.profile(customer, "p")),
        (b"HGETALL", keys.profile(customer, "attr")),
        *[(b"ZREVRANGE", keys.profile(customer, z), 0, -1, b"WITHSCORES") for z in _ZSETS],
        (b"SMEMBERS", keys.customer_identifiers(site, customer)),
        (b"SMEMBERS", keys.merged_from(site, customer)),
    ]


def _profile_of(customer: str, site: str, replies: list[Any]) -> Profile:
    p, attr, *zsets, ids, merged = replies
    return _profile(customer, site, pairs(p), pairs(attr), [scored(z) for z in zsets], ids, merged)


def _profile(
    customer: str,
    site: str,
    p: dict[str, str],
    attr: dict[str, str],
    zsets: list[list[tuple[str, float]]],
    ids: Iterable[bytes],
    merged: Iterable[bytes],
) -> Profile:
    counters = Counters(
        **{c: int(p.get(c, 0)) for c in COUNTERS},
        revenue=round(float(p.get("revenue", 0.0)), 4),
    )
    channels: dict[str, Seen] = {}
    for field, value in p.items():
        edge, _, channel = field.partition(":")
        if channel and edge in ("first", "last"):
            seen = channels.setdefault(channel, Seen())
            setattr(seen, edge, _time(value))
    traits: dict[str, Trait] = {}
    consent: dict[str, Consent] = {}
    timezone = None
    for field, raw in ((k, json.loads(v)) for k, v in attr.items()):
        at = _time(raw["at"])
        if field.startswith("trait:"):
            traits[field[6:]] = Trait(raw["v"], at, raw["ch"])
        elif field.startswith("consent:"):
            _, channel, purpose = field.split(":", 2)
            consent[f"{channel}:{purpose}"] = Consent(
                channel=channel,
                purpose=purpose,
                granted=bool(raw["v"]),
                at=at,
                source=raw["ch"],
                event_id=raw.get("event"),
            )
        elif field == "timezone":
            timezone = str(raw["v"])
    viewed, carted, bought, interests, stores = zsets
    return Profile(
        customer_id=customer,
        site=site,
        first_seen=_time(p["first_seen"]) if "first_seen" in p else None,
        last_seen=_time(p["last_seen"]) if "last_seen" in p else None,
        counters=counters,
        channels=dict(sorted(channels.items())),
        traits=dict(sorted(traits.items())),
        consent=dict(sorted(consent.items())),
        viewed=[Item(m, _time(s)) for m, s in viewed],
        carted=[Item(m, _time(s)) for m, s in carted],
        bought=[Item(m, _time(s)) for m, s in bought],
        interests={m: s for m, s in interests},
        stores={m: int(s) for m, s in stores},
        preferred_store=stores[0][0] if stores else None,
        timezone=timezone,
        identifiers=sorted(text(i) for i in ids),
        merged_from=sorted(text(m) for m in merged),
    )


async def explain(client: aioredis.Redis, keys: Keys, customer_id: str) -> dict[str, Any] | None:
    """The identity story of a customer: identifiers, flags, merges and refusals."""
    located = await locate(client, keys, customer_id)
    if located is None:
        return None
    survivor, site = located
    story = await identity.explain(client, keys, site, survivor)
    story["requested"] = customer_id
    return story


async def _open_sessions(
    client: aioredis.Redis, keys: Keys, site: str, identifiers: list[str]
) -> list[dict[str, Any]]:
    found = []
    for ident in identifiers:
        kind, _, value = ident.partition(":")
        if kind in ("anonymous_id", "user_id"):
            blob = await client.hget(keys.open_session(site, value), "s")
            if isinstance(blob, bytes):
                found.append(msgspec.to_builtins(unpack_state(blob)))
    return found


async def export(client: aioredis.Redis, keys: Keys, customer_id: str) -> dict[str, Any] | None:
    """Everything the data mart holds about a customer, as JSON-ready data (access requests)."""
    profile = await get_profile(client, keys, customer_id)
    if profile is None:
        return None
    story = await identity.explain(client, keys, profile.site, profile.customer_id)
    return {
        "customer_id": profile.customer_id,
        "requested": customer_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "profile": msgspec.to_builtins(profile),
        "identity": story,
        "open_sessions": await _open_sessions(client, keys, profile.site, profile.identifiers),
    }


_ERASE_IDENTITY: Final = """
local base, c = KEYS[1], ARGV[1]
local gone = {c}
for _, x in ipairs(redis.call('SMEMBERS', base .. ':from:' .. c)) do gone[#gone + 1] = x end
local idents = {}
for _, x in ipairs(gone) do
  for _, ident in ipairs(redis.call('SMEMBERS', base .. ':ids:' .. x)) do
    idents[#idents + 1] = ident
    redis.call('DEL', base .. ':id:' .. ident)
    redis.call('HDEL', base .. ':flags', ident)
    redis.call('HDEL', base .. ':links', ident)
  end
  redis.call('DEL', base .. ':ids:' .. x, base .. ':cust:' .. x, base .. ':log:' .. x,
             base .. ':from:' .. x)
end
for _, f in ipairs(redis.call('SMEMBERS', base .. ':folds')) do
  for _, x in ipairs(gone) do
    if string.find(' ' .. f .. ' ', ' ' .. x .. ' ', 1, true) then
      redis.call('SREM', base .. ':folds', f)
    end
  end
end
return {gone, idents}
"""


async def erase(
    client: aioredis.Redis, keys: Keys, customer_id: str, *, dedup_window: float = 86_400.0
) -> list[str]:
    """Remove a customer (and those merged into it) from the data mart; the ids erased.

    Profile, identifiers, flags, merge log, and the open sessions and replay maps of its
    visitor ids go (``dedup_window``: ``collector.dedup_window``, which buckets those maps).
    Events still on the bus would bring the identifiers back: the privacy API erases after
    the bus is drained, or blocks the identifiers first.
    """
    located = await locate(client, keys, customer_id)
    if located is None:
        return []
    survivor, site = located
    script = client.register_script(_ERASE_IDENTITY)
    gone_raw, idents_raw = await script(keys=[keys.identity(site)], args=[survivor])
    gone = [text(g) for g in gone_raw]
    window_ms = int(dedup_window * 1000)
    bucket = int(time.time() * 1000) // window_ms
    removed: list[str] = []
    for ident in (text(i) for i in idents_raw):
        kind, _, value = ident.partition(":")
        if kind in ("anonymous_id", "user_id"):
            removed.append(keys.open_session(site, value))
            removed += [
                keys.session_of_events(site, value, b) for b in range(bucket - 2, bucket + 1)
            ]
            await client.zrem(keys.idle_sessions(), keys.open_session(site, value))
    async with client.pipeline(transaction=False) as pipe:
        for key in removed:
            pipe.delete(key)
        for customer in gone:
            pipe.delete(*keys.profile_keys(customer))
        await pipe.execute()
    return gone
