"""Kiosk coupons: issued by a kiosk, checked and redeemed at a till.

A coupon is one Redis hash (``keys.coupon(code)``): where it was issued (store, kiosk, kiosk
session: no customer id, the session's events tell who it was), its discount, and once redeemed
the order that took it. It expires ``pos.coupon_valid`` seconds
after it was issued. Redeeming is one script: a coupon goes to one order only, and the same
order redeeming it again (a till's retry) is told ``redeemed`` again.
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
    redis: aioredis.Redis, keys: Keys, orders: Sequence[tuple[str, str, Sequence[str]]]
) -> dict[str, dict[str, Outcome]]:
    """Redeem each ``(order id, store, codes)``'s coupons for it, in one round trip: per order,
    each code's outcome."""
    now = repr(time.time())
    calls = [
        (order, code, _REDEEM.call([keys.coupon(code)], [order, now, store]))
        for order, store, codes in orders
        for code in dict.fromkeys(codes)
    ]
    if not calls:
        return {}
    replies = (await execute(redis, [_REDEEM.load(), *(call for _, _, call in calls)]))[1:]
    out: dict[str, dict[str, Outcome]] = {}
    for (order, code, _), outcome in zip(calls, replies, strict=True):
        out.setdefault(order, {})[code] = cast(Outcome, text(outcome))
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
