"""Kiosk coupons: issued by a kiosk, checked and redeemed at a till.

A coupon is one Redis hash (``keys.coupon(code)``): where it was issued (store, kiosk, kiosk
session: no customer id, the session's events tell who it was), its discount, and once redeemed
the order that took it. It expires ``pos.coupon_valid`` seconds
after it was issued. Redeeming is one script: a coupon goes to one order only, and the same
order redeeming it again (a till's retry) is told ``redeemed`` again. The order's codes are
noted (``keys.order_coupons``, for as long as a coupon lives), so voiding the sale gives them
back: each becomes valid again, unless another order has it by then. A return gives none back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

import redis.asyncio as aioredis

from gateway.bus import execute
from gateway.datamart.lua import Script, text
from gateway.keys import Keys

Outcome = Literal["redeemed", "already redeemed", "unknown"]
#: What a void did with a coupon its sale had redeemed.
Release = Literal["released", "redeemed by another order", "expired"]

#: KEYS[1] the coupon; ARGV the order, the time, the store: the outcome.
_REDEEM: Final = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
local by = redis.call('HGET', KEYS[1], 'redeemed_by')
if by and by ~= ARGV[1] then return 'already redeemed' end
if not by then
  redis.call('HSET', KEYS[1], 'redeemed_by', ARGV[1], 'redeemed_at', ARGV[2],
             'redeemed_store', ARGV[3])
end
return 'redeemed'
"""
)

#: KEYS[1] the coupon; ARGV[1] the voided order: give it back if that order has it.
_RELEASE: Final = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'expired' end
local by = redis.call('HGET', KEYS[1], 'redeemed_by')
if by and by ~= ARGV[1] then return 'redeemed by another order' end
redis.call('HDEL', KEYS[1], 'redeemed_by', 'redeemed_at', 'redeemed_store')
return 'released'
"""
)


async def issue(
    redis: aioredis.Redis, keys: Keys, code: str, valid: float, **fields: str | int
) -> None:
    """Keep coupon ``code`` for ``valid`` seconds with ``fields`` (store, kiosk, session...)."""
    now = time.time()
    values: dict[Any, Any] = {**fields, "issued_at": repr(now), "expires_at": repr(now + valid)}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.coupon(code), mapping=values)
        pipe.pexpire(keys.coupon(code), int(valid * 1000))
        await pipe.execute()


async def redeem(
    redis: aioredis.Redis,
    keys: Keys,
    orders: Sequence[tuple[str, str, Sequence[str]]],
    valid: float,
) -> dict[str, dict[str, Outcome]]:
    """Redeem each ``(order id, store, codes)``'s coupons for it, in one round trip (and note
    the codes redeemed under the order for ``valid`` seconds, for a void): per order, each
    code's outcome."""
    now = repr(time.time())
    calls = [
        (order, code, _REDEEM.call([keys.coupon(code)], [order, now, store]))
        for order, store, codes in orders
        for code in dict.fromkeys(codes)
    ]
    out = cast(dict[str, dict[str, Outcome]], await _per_order(redis, _REDEEM, calls))
    notes: list[tuple[Any, ...]] = []
    for order, outcomes in out.items():
        if taken := [code for code, outcome in outcomes.items() if outcome == "redeemed"]:
            notes.append((b"SADD", keys.order_coupons(order), *taken))
            notes.append((b"PEXPIRE", keys.order_coupons(order), int(valid * 1000)))
    if notes:
        await execute(redis, notes)
    return out


async def release(
    redis: aioredis.Redis, keys: Keys, orders: Sequence[str]
) -> dict[str, dict[str, Release]]:
    """Give back the coupons each voided order redeemed: per order with some, each code's
    outcome (a void sent again finds them released already, and says so again)."""
    noted = await execute(redis, [(b"SMEMBERS", keys.order_coupons(o)) for o in orders])
    calls = [
        (order, text(code), _RELEASE.call([keys.coupon(text(code))], [order]))
        for order, codes in zip(orders, noted, strict=True)
        for code in sorted(codes)
    ]
    return cast(dict[str, dict[str, Release]], await _per_order(redis, _RELEASE, calls))


async def _per_order(
    redis: aioredis.Redis, script: Script, calls: Sequence[tuple[str, str, tuple[Any, ...]]]
) -> dict[str, dict[str, str]]:
    """Run ``(order, code, script call)`` s in one round trip: per order, each code's answer."""
    if not calls:
        return {}
    replies = (await execute(redis, [script.load(), *(call for _, _, call in calls)]))[1:]
    out: dict[str, dict[str, str]] = {}
    for (order, code, _), outcome in zip(calls, replies, strict=True):
        out.setdefault(order, {})[code] = text(outcome)
    return out


async def look_up(redis: aioredis.Redis, keys: Keys, code: str) -> dict[str, Any] | None:
    """What a till may know of a coupon: its discount, whether it is still valid, until when
    (None: no such coupon, or expired)."""
    found = {text(k): text(v) for k, v in (await redis.hgetall(keys.coupon(code))).items()}
    if not found:
        return None
    redeemed = found.get("redeemed_by")
    return {
        "coupon": code,
        "status": "redeemed" if redeemed else "valid",
        "discount_percent": int(found.get("discount_percent", "0")),
        "expires_at": _iso(found.get("expires_at")),
        "redeemed_by": redeemed,
        "redeemed_at": _iso(found.get("redeemed_at")),
    }


def _iso(value: str | None) -> str | None:
    return datetime.fromtimestamp(float(value), UTC).isoformat() if value else None
