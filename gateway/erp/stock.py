"""The stock cache in the data mart, for the push engine, the decision API and the kiosk.

One hash per SKU (location → quantity, as last synced from the ERP) and one status hash for
the syncs: when each entity last synced, whether its last attempt failed (``stale``: the
levels here are the last known ones), its cursor and counts. Writes are one MULTI per sync.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from gateway.config import ErpConfig
from gateway.datamart.lua import text
from gateway.erp.base import Entity, Product, StockLevel
from gateway.keys import Keys


async def in_stock(redis: aioredis.Redis, keys: Keys, sku: str, location: str) -> bool:
    """Whether ``location`` has at least one ``sku`` on hand (unknown: no) and the ERP has not
    deactivated it."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.erp_stock(sku), location)
        pipe.sismember(keys.erp_inactive(), sku)
        value, inactive = await pipe.execute()
    return value is not None and float(value) > 0 and not inactive


async def record_active(redis: aioredis.Redis, keys: Keys, active: Mapping[str, bool]) -> None:
    """Keep the set of the SKUs the ERP deactivated."""
    off = [sku for sku, on in active.items() if not on]
    on = [sku for sku, on in active.items() if on]
    async with redis.pipeline(transaction=True) as pipe:
        if off:
            pipe.sadd(keys.erp_inactive(), *off)
        if on:
            pipe.srem(keys.erp_inactive(), *on)
        await pipe.execute()


async def renamed(
    redis: aioredis.Redis, keys: Keys, products: Sequence[Product]
) -> list[tuple[str, str]]:
    """The (old, new) SKUs of the products the ERP renamed since their ids were last noted."""
    named = {p.erp_id: p.sku for p in products if p.erp_id}
    if not named:
        return []
    before = await redis.hmget(keys.erp_product_ids(), list(named))
    return [
        (text(old), sku)
        for sku, old in zip(named.values(), before, strict=True)
        if old is not None and text(old) != sku
    ]


async def record_names(
    redis: aioredis.Redis,
    keys: Keys,
    products: Sequence[Product],
    renames: Sequence[tuple[str, str]] = (),
) -> None:
    """Note the SKU each ERP id has now (last, once the rest of a rename is done, so a crash
    before it finds the rename again); the stock cache carries an old SKU's levels over to the
    new one unless it has levels of its own (the goods did not move). One script."""
    named = {p.erp_id: p.sku for p in products if p.erp_id}
    if not named:
        return
    await redis.register_script(_RENAME)(
        keys=[
            keys.erp_product_ids(),
            *(keys.erp_stock(sku) for pair in renames for sku in pair),
        ],
        args=[x for pair in named.items() for x in pair],
    )


async def stock_levels(redis: aioredis.Redis, keys: Keys, sku: str) -> dict[str, float]:
    """Quantity on hand of ``sku`` per location (empty: the ERP never named it)."""
    found = await redis.hgetall(keys.erp_stock(sku))
    return {text(k): float(v) for k, v in found.items()}


async def last_sync(redis: aioredis.Redis, keys: Keys, entity: Entity = "stock") -> datetime | None:
    """When ``entity`` last synced successfully (None: never)."""
    value = await redis.hget(keys.erp_status(), f"{entity}.synced_at")
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


async def is_stale(
    redis: aioredis.Redis, keys: Keys, entity: Entity = "stock", max_age: float | None = None
) -> bool:
    """Whether what the cache holds for ``entity`` is only the last known: its last sync
    failed, it never synced, or (``max_age``) it last synced more than that many seconds ago."""
    failed, synced = await redis.hmget(
        keys.erp_status(), [f"{entity}.stale", f"{entity}.synced_at"]
    )
    if failed == b"1" or synced is None:
        return True
    return max_age is not None and time.time() - float(synced) > max_age


async def sellable(
    redis: aioredis.Redis, keys: Keys, sku: str, location: str, settings: ErpConfig
) -> bool:
    """What the push engine asks before offering ``sku``: in stock at ``location``, and that
    stock trusted — stale stock (``erp.stale_after``, a failing sync) counts as none under
    ``erp.stale_stock = "skip"``, as the last known levels under ``"last_known"``."""
    return await trusted(redis, keys, settings) and await in_stock(redis, keys, sku, location)


async def trusted(redis: aioredis.Redis, keys: Keys, settings: ErpConfig) -> bool:
    """Whether the cached levels may be offered now, per ``erp.stale_stock``."""
    if settings.stale_stock == "last_known":
        return True
    return not await is_stale(redis, keys, "stock", settings.stale_after)


async def status(
    redis: aioredis.Redis, keys: Keys, stale_after: float | None = None
) -> dict[str, dict[str, Any]]:
    """Every entity's sync status, as ``touchpoint erp status``, ``/readyz`` and the dashboard
    show it; with ``stale_after``, ``stale`` is also true where the last good sync is older."""
    found = await redis.hgetall(keys.erp_status())
    result: dict[str, dict[str, Any]] = {}
    synced: dict[str, float] = {}
    for key, raw in found.items():
        entity, _, name = text(key).partition(".")
        value: Any = text(raw)
        if name == "synced_at":
            synced[entity] = float(value)
            value = datetime.fromtimestamp(synced[entity], UTC).isoformat()
        elif name in ("rows", "skipped", "failures", "changed"):
            value = int(value)
        elif name == "stale":
            value = value == "1"
        result.setdefault(entity, {})[name] = value
    if stale_after is not None:
        now = time.time()
        for entity, info in result.items():
            old = entity not in synced or now - synced[entity] > stale_after
            info["stale"] = bool(info.get("stale")) or old
    return result


async def cursor(redis: aioredis.Redis, keys: Keys, entity: Entity, connector: str) -> str | None:
    """Where the next read of ``entity`` starts; None when nothing was kept or when another
    connector kept it (switching ``erp.connector`` starts from scratch: one ERP's cursor
    means nothing to another)."""
    value = await redis.hget(keys.erp_status(), f"{entity}.cursor")
    kept_by, _, kept = text(value).partition(" ") if value is not None else ("", "", "")
    return kept if kept_by == connector else None


async def levels_of(
    redis: aioredis.Redis, keys: Keys, skus: Iterable[str]
) -> dict[str, dict[str, float]]:
    """The cached levels of several SKUs, in one round trip."""
    skus = list(skus)
    async with redis.pipeline(transaction=False) as pipe:
        for sku in skus:
            pipe.hgetall(keys.erp_stock(sku))
        replies = await pipe.execute()
    return {
        sku: {text(k): float(v) for k, v in reply.items()}
        for sku, reply in zip(skus, replies, strict=True)
    }


async def record_page(
    redis: aioredis.Redis,
    keys: Keys,
    entity: Entity,
    connector: str,
    cursor: str | None,
    levels: Sequence[StockLevel] = (),
) -> None:
    """A loaded page's levels and the cursor past it (kept as ``<connector> <cursor>``), in
    one script (atomic: a reader never sees one without the other, and a sync that stops
    half-way resumes after the last page kept). One script, not a pipeline: ~10 ms for 5,000
    levels instead of ~70."""
    args: list[Any] = [f"{entity}.cursor", "" if cursor is None else f"{connector} {cursor}"]
    for level in levels:
        args += (level.location, repr(level.quantity))
    stock_keys = [keys.erp_stock(level.sku) for level in levels]
    await redis.register_script(_WRITE_PAGE)(keys=[keys.erp_status(), *stock_keys], args=args)


async def known_levels(
    redis: aioredis.Redis, keys: Keys, levels: Sequence[StockLevel]
) -> dict[tuple[str, str], float]:
    """The cached quantity of each (sku, location) of ``levels`` that has one, in one script."""
    if not levels:
        return {}
    found = await redis.register_script(_READ_LEVELS)(
        keys=[keys.erp_stock(level.sku) for level in levels],
        args=[level.location for level in levels],
    )
    return {
        (level.sku, level.location): float(value)
        for level, value in zip(levels, found, strict=True)
        if value is not None
    }


#: KEYS[1] the status hash, KEYS[2..] one stock hash per level; ARGV the cursor's field, the
#: cursor ('' deletes it), then location and quantity per level.
_WRITE_PAGE = """
for i = 2, #KEYS do redis.call('HSET', KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]) end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return #KEYS - 1"""
#: KEYS[1] ERP id → SKU, then the old and the new stock hash per rename; ARGV ERP id and SKU
#: per product. The new SKU gets the old one's levels when it has none.
_RENAME = """
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    local levels = redis.call('HGETALL', KEYS[i])
    if #levels > 0 then redis.call('HSET', KEYS[i + 1], unpack(levels)) end
  end
end
for i = 1, #ARGV, 1000 do  -- unpack takes ~8,000 values at most
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1"""
#: KEYS one stock hash per level, ARGV its location: the quantities (false: none cached).
_READ_LEVELS = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, ARGV[i]) end
return out"""


async def record_success(
    redis: aioredis.Redis,
    keys: Keys,
    entity: Entity,
    at: datetime,
    fields: Mapping[str, Any],
) -> None:
    """A whole sync done: its counts, when, not stale (its cursor is kept page by page)."""
    values: dict[Any, Any] = {f"{entity}.{k}": str(v) for k, v in fields.items() if v is not None}
    values |= {f"{entity}.synced_at": repr(at.timestamp()), f"{entity}.stale": "0"}
    values[f"{entity}.failures"] = "0"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.erp_status(), mapping=values)
        pipe.hdel(keys.erp_status(), f"{entity}.error")
        await pipe.execute()


async def sale_states(redis: aioredis.Redis, keys: Keys, order_ids: list[str]) -> dict[str, str]:
    """The state each of these ERP orders was published in (absent: never)."""
    found = await redis.hmget(keys.erp_sales(), order_ids)
    return {o: text(v) for o, v in zip(order_ids, found, strict=True) if v is not None}


async def mark_sales(redis: aioredis.Redis, keys: Keys, states: Mapping[str, str]) -> None:
    mapping: dict[Any, Any] = dict(states)
    await redis.hset(keys.erp_sales(), mapping=mapping)


async def record_failure(
    redis: aioredis.Redis, keys: Keys, entity: Entity, error: str, failures: int
) -> None:
    """Mark ``entity`` stale: its last known data is kept, and says so."""
    values: dict[Any, Any] = {
        f"{entity}.stale": "1",
        f"{entity}.error": error,
        f"{entity}.failures": failures,
    }
    await redis.hset(keys.erp_status(), mapping=values)
