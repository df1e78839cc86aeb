"""The stock cache in the data mart, for the push engine, the decision API and the kiosk.

One hash per SKU (location → quantity, as last synced from the ERP) and one status hash for
the syncs: when each entity last synced, whether its last attempt failed (``stale``: the
levels here are the last known ones), its cursor and counts. Writes are one MULTI per sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from gateway.datamart.lua import text
from gateway.erp.base import Entity, StockLevel
from gateway.keys import Keys


async def in_stock(redis: aioredis.Redis, keys: Keys, sku: str, location: str) -> bool:
    """Whether ``location`` has at least one ``sku`` on hand (unknown: no)."""
    value = await redis.hget(keys.erp_stock(sku), location)
    return value is not None and float(value) > 0


async def stock_levels(redis: aioredis.Redis, keys: Keys, sku: str) -> dict[str, float]:
    """Quantity on hand of ``sku`` per location (empty: the ERP never named it)."""
    found = await redis.hgetall(keys.erp_stock(sku))
    return {text(k): float(v) for k, v in found.items()}


async def last_sync(redis: aioredis.Redis, keys: Keys, entity: Entity = "stock") -> datetime | None:
    """When ``entity`` last synced successfully (None: never)."""
    value = await redis.hget(keys.erp_status(), f"{entity}.synced_at")
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


async def is_stale(redis: aioredis.Redis, keys: Keys, entity: Entity = "stock") -> bool:
    """Whether the last sync of ``entity`` failed (what the cache holds is the last known)."""
    return await redis.hget(keys.erp_status(), f"{entity}.stale") == b"1"


async def status(redis: aioredis.Redis, keys: Keys) -> dict[str, dict[str, Any]]:
    """Every entity's sync status, as ``touchpoint erp status`` shows it."""
    found = await redis.hgetall(keys.erp_status())
    result: dict[str, dict[str, Any]] = {}
    for key, raw in found.items():
        entity, _, name = text(key).partition(".")
        value: Any = text(raw)
        if name == "synced_at":
            value = datetime.fromtimestamp(float(value), UTC).isoformat()
        elif name in ("rows", "skipped", "failures", "changed"):
            value = int(value)
        elif name == "stale":
            value = value == "1"
        result.setdefault(entity, {})[name] = value
    return result


async def cursor(redis: aioredis.Redis, keys: Keys, entity: Entity) -> str | None:
    value = await redis.hget(keys.erp_status(), f"{entity}.cursor")
    return None if value is None else text(value)


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


async def record_success(
    redis: aioredis.Redis,
    keys: Keys,
    entity: Entity,
    at: datetime,
    fields: Mapping[str, Any],
    levels: Iterable[StockLevel] = (),
) -> None:
    """The new levels and the entity's status, together: a reader never sees one without the
    other."""
    values: dict[Any, Any] = {f"{entity}.{k}": str(v) for k, v in fields.items() if v is not None}
    values |= {f"{entity}.synced_at": repr(at.timestamp()), f"{entity}.stale": "0"}
    values[f"{entity}.failures"] = "0"
    async with redis.pipeline(transaction=True) as pipe:
        for level in levels:
            pipe.hset(keys.erp_stock(level.sku), level.location, repr(level.quantity))
        pipe.hset(keys.erp_status(), mapping=values)
        pipe.hdel(keys.erp_status(), f"{entity}.error")
        await pipe.execute()


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
