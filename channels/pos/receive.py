"""``POST /v1/pos/transactions`` (one) and ``POST /v1/pos/batch`` (NDJSON, an offline till's
backlog, gzip allowed): signed per terminal, answered once the events are in Redis.

Order of checks: the signature (401), its nonce not seen in ``2 * pos.timestamp_window`` (401;
``SET NX PX`` in Redis, only once the signature is good so nobody else can burn a till's
nonces), then the body (400 naming the field; per line in a batch, valid lines kept). A retry
of a receipt answers 200 with the same body and ``"duplicate": true``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from redis.exceptions import RedisError

from channels.pos import coupons
from channels.pos.signing import Refused, Till, tills, verify
from channels.pos.transactions import Transaction, decode, to_event
from gateway import keys as K
from gateway.config import Config
from gateway.errors import BusUnavailable, EventError
from gateway.events import Event
from gateway.warehouse.pii import email_hash, pii_key
from gateway.web.state import CONFIG, COUNTERS, PUBLISHER, REDIS

log = logging.getLogger(__name__)

TILLS: Final = web.AppKey("pos_tills", dict[str, Till])
EMAIL_KEY: Final = web.AppKey("pos_email_key", bytes)
MAX_BATCH_LINES: Final = 10_000


def setup(app: web.Application) -> None:
    app[TILLS] = tills(app[CONFIG])
    app.on_startup.append(_start)
    app.router.add_post("/v1/pos/transactions", transaction)
    app.router.add_post("/v1/pos/batch", batch)
    app.router.add_get("/v1/pos/coupons/{code}", coupon)


async def _start(app: web.Application) -> None:
    config = app[CONFIG]
    app[EMAIL_KEY] = pii_key(config)
    for store in config.stores.values():
        for terminal, till in store.terminals.items():
            if not any(key.is_set for key in till.keys):
                names = ", ".join(k.env or "inline" for k in till.keys) or "none configured"
                log.warning("pos: till %s has no key set (%s): it cannot sign in", terminal, names)


async def authenticate(request: web.Request, body: bytes) -> Till:
    app = request.app
    config = app[CONFIG]
    window = config.pos.timestamp_window
    known = app[TILLS]
    try:
        till, nonce = verify(
            known, request.headers, request.method, request.path, body,
            now=time.time(), window=window,
        )  # fmt: skip
    except Refused as exc:
        raise web.HTTPUnauthorized(reason=str(exc)) from None
    key = K.Keys(config.redis.prefix).pos_nonce(till.terminal, nonce)
    try:
        fresh = await app[REDIS].set(key, b"1", nx=True, px=int(2000 * window))
    except (RedisError, OSError, TimeoutError) as exc:
        raise BusUnavailable(f"nonce check: {exc}") from exc
    if not fresh:
        raise web.HTTPUnauthorized(reason="nonce already used (a replayed request)")
    return till


def event_of(txn: Transaction, till: Till, config: Config, key: bytes, now: datetime) -> Event:
    """The transaction's event, once it is known to come from the till that signed it."""
    if txn.store != till.store:
        raise EventError(f"must be {till.store!r}, the signing terminal's store", "store")
    if txn.terminal != till.terminal:
        raise EventError(f"must be {till.terminal!r}, the signing terminal", "terminal")
    return to_event(
        txn, config.stores[txn.store], received_at=now, email_hash=email_hash(key, txn.email)
    )


async def transaction(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    body = await request.read()
    till = await authenticate(request, body)
    txn = decode(body)
    event = event_of(txn, till, config, app[EMAIL_KEY], datetime.now(UTC))
    redeemed, released = await _coupons(request, [txn])
    published = await app[PUBLISHER].publish(K.EVENTS, [event], dedup=config.web.dedup_window)
    _count(request, published.events)
    answer: dict[str, Any] = {
        "success": True,
        "event_id": event.event_id,
        "order_id": txn.order_id,
        "kind": txn.kind,
        "duplicate": published.duplicates > 0,
    }
    if txn.coupons:
        answer["coupons"] = redeemed[txn.order_id]
    if txn.original_order_id in released:
        answer["coupons_released"] = released[txn.original_order_id]
    return web.json_response(answer)


async def coupon(request: web.Request) -> web.Response:
    """``GET /v1/pos/coupons/{code}`` (signed like a transaction): may the till take it?"""
    await authenticate(request, b"")
    app = request.app
    keys = K.Keys(app[CONFIG].redis.prefix)
    code = request.match_info["code"]
    found = await coupons.look_up(app[REDIS], keys, code)
    if found is None:
        raise web.HTTPNotFound(reason=f"no coupon {code[:40]!r} (or it expired)")
    return web.json_response(found)


Redeemed = dict[str, dict[str, coupons.Outcome]]
Released = dict[str, dict[str, coupons.Release]]


async def _coupons(request: web.Request, txns: list[Transaction]) -> tuple[Redeemed, Released]:
    """Per order, the outcome of each coupon a sale redeems; per voided order, what became of
    each coupon its sale had redeemed (given back). In line order — a sale after a void takes
    what the void gave back —, each run of sales or of voids in one round trip; before the
    events are published, so a till's retry after a failure here does it again as the same
    orders (Redis away: 503)."""
    app = request.app
    keys = K.Keys(app[CONFIG].redis.prefix)
    redeemed: Redeemed = {}
    released: Released = {}
    runs: list[tuple[bool, list[Transaction]]] = []  # (voids?, their transactions)
    for t in txns:
        void = t.kind == "void" and t.original_order_id is not None
        if not void and not t.coupons:
            continue
        if not runs or runs[-1][0] != void:
            runs.append((void, []))
        runs[-1][1].append(t)
    for void, run in runs:
        if void:
            orders = [t.original_order_id for t in run if t.original_order_id]
            released |= await coupons.release(app[REDIS], keys, orders)
        else:
            sales = [(t.order_id, t.store, t.coupons) for t in run]
            redeemed |= await coupons.redeem(app[REDIS], keys, sales, app[CONFIG].pos.coupon_valid)
    return redeemed, released


async def batch(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    body = await request.read()
    till = await authenticate(request, body)
    now = datetime.now(UTC)
    key = app[EMAIL_KEY]
    events: list[Event] = []
    accepted: list[Transaction] = []
    rejected: list[dict[str, Any]] = []
    lines = body.split(b"\n")
    if len(lines) > MAX_BATCH_LINES + 1:
        raise EventError(f"at most {MAX_BATCH_LINES} lines per batch", "body")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            txn = decode(line)
            events.append(event_of(txn, till, config, key, now))
            accepted.append(txn)
        except EventError as exc:
            rejected.append({"line": number, "error": exc.reason, "field": exc.field})
    app[COUNTERS].rejected += len(rejected)
    if not events:
        return web.json_response(
            {"success": False, "error": "no valid transactions", "rejected": rejected}, status=400
        )
    redeemed, released = await _coupons(request, accepted)
    published = await app[PUBLISHER].publish(K.EVENTS, events, dedup=config.web.dedup_window)
    _count(request, published.events)
    answer: dict[str, Any] = {
        "success": True,
        "accepted": published.events,
        "duplicates": published.duplicates,
        "rejected": rejected,
    }
    if redeemed:
        answer["coupons"] = redeemed
    if released:
        answer["coupons_released"] = released
    return web.json_response(answer)


def _count(request: web.Request, events: int) -> None:
    counters = request.app[COUNTERS]
    counters.received["pos"] = counters.received.get("pos", 0) + events
