"""One sync of one entity: read from the connector, load the warehouse, update the stock
cache, publish a ``Stock Changed`` event per change, then confirm the page to the connector.

The order makes a crash harmless: the warehouse upserts are idempotent; the events carry an
id derived from the change and the page's cursor, so a replay is dropped by the collector's
filter; the cache is written after the events, so a retry still sees the change; the
connector forgets the page (moves its files to ``done/``) last. A sync that fails (the ERP
unreachable, the warehouse down) keeps the last known data, marks the entity stale and is
retried after a capped exponential backoff.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis

from gateway.bus import Bus
from gateway.config import ErpConfig
from gateway.erp import stock
from gateway.erp.base import Connector, Entity, Page, Product, StockLevel, Store
from gateway.events import Event
from gateway.keys import EVENTS, Keys
from gateway.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Entities the agent keeps in sync. Customers are read by the connectors but not loaded yet.
SYNCED: Final[tuple[Entity, ...]] = ("stores", "products", "stock")
STOCK_CHANGED: Final = "Stock Changed"


@dataclass(frozen=True)
class SyncResult:
    entity: Entity
    rows: int = 0
    skipped: int = 0
    changed: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Change:
    sku: str
    location: str
    old: float | None
    new: float


def retry_delay(interval: float, failures: int, cap: float) -> float:
    """Seconds before the next attempt after ``failures`` failures in a row: the interval,
    doubled per failure, at most ``cap`` (never below the interval)."""
    return float(max(interval, min(cap, interval * 2 ** max(failures - 1, 0))))


def stock_changes(
    levels: list[StockLevel], known: dict[str, dict[str, float]]
) -> tuple[list[StockLevel], list[Change]]:
    """The page's levels, last one per (sku, location), and those that differ from ``known``."""
    latest = {(level.sku, level.location): level for level in levels}
    changes = [
        Change(level.sku, level.location, old, level.quantity)
        for level in latest.values()
        if (old := known.get(level.sku, {}).get(level.location)) != level.quantity
    ]
    return list(latest.values()), changes


def change_event(change: Change, site: str, cursor: str | None, now: datetime) -> Event:
    digest = hashlib.sha256(
        f"{change.sku}|{change.location}|{change.old}|{change.new}|{cursor}".encode()
    ).hexdigest()[:24]
    return Event(
        event_id=f"erp-stock-{digest}",
        type="track",
        name=STOCK_CHANGED,
        channel="erp",
        site=site,
        timestamp=now,
        received_at=now,
        properties={
            "sku": change.sku,
            "location": change.location,
            "old": change.old,
            "new": change.new,
        },
    )


class ErpSync:
    """The entities of one connector, each on its interval, with backoff when failing."""

    def __init__(
        self,
        connector: Connector,
        warehouse: Warehouse,
        redis: aioredis.Redis,
        keys: Keys,
        bus: Bus,
        settings: ErpConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connector = connector
        self.warehouse = warehouse
        self.redis = redis
        self.keys = keys
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.intervals: dict[Entity, float] = {
            "stores": settings.stores_interval,
            "products": settings.products_interval,
            "stock": settings.stock_interval,
        }
        self.next_due: dict[Entity, float] = dict.fromkeys(SYNCED, 0.0)
        self.failures: dict[Entity, int] = dict.fromkeys(SYNCED, 0)

    async def run_due(self) -> list[SyncResult]:
        """Sync every entity whose time has come (all of them on the first call)."""
        return [await self.sync(e) for e in SYNCED if self.clock() >= self.next_due[e]]

    async def sync(self, entity: Entity, *, full: bool = False) -> SyncResult:
        """Sync ``entity`` now (``full``: from no cursor); never raises for an ERP failure."""
        try:
            result = await self._sync(entity, full)
        except Exception as exc:
            failures = self.failures[entity] = self.failures.get(entity, 0) + 1
            delay = retry_delay(self.intervals[entity], failures, self.settings.max_backoff)
            self.next_due[entity] = self.clock() + delay
            error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("erp %s: sync failed (%d in a row, next in %.0f s): %s",
                        entity, failures, delay, error)  # fmt: skip
            await stock.record_failure(self.redis, self.keys, entity, error, failures)
            return SyncResult(entity, error=error)
        self.failures[entity] = 0
        self.next_due[entity] = self.clock() + self.intervals[entity]
        return result

    async def _sync(self, entity: Entity, full: bool) -> SyncResult:
        cursor = None if full else await stock.cursor(self.redis, self.keys, entity)
        now = datetime.now(UTC)
        levels: list[StockLevel] = []
        changes: list[Change] = []
        page: Page[Any]
        if entity == "products":
            page = await self.connector.products(cursor)
            if page.rows:
                await self.warehouse.upsert("dim_product", [product_row(p, now) for p in page.rows])
        elif entity == "stores":
            page = await self.connector.stores(cursor)
            if page.rows:
                await self.warehouse.upsert("dim_store", [store_row(s) for s in page.rows])
        elif entity == "stock":
            page = await self.connector.stock(cursor)
            known = await stock.levels_of(self.redis, self.keys, {r.sku for r in page.rows})
            levels, changes = stock_changes(page.rows, known)
            if levels:
                await self.warehouse.upsert("product_stock", [stock_row(s, now) for s in levels])
            if changes:
                events = [change_event(c, self.settings.site, page.cursor, now) for c in changes]
                await self.bus.publish(EVENTS, events)
        else:
            raise ValueError(f"entity {entity!r} is not synced yet")
        fields = {"cursor": page.cursor, "rows": len(page.rows), "skipped": page.skipped,
                  "changed": len(changes)}  # fmt: skip
        await stock.record_success(self.redis, self.keys, entity, now, fields, levels)
        await self.connector.confirm(entity, page)
        if page.rows or page.skipped:
            log.info("erp %s: %d rows, %d skipped, %d stock changes",
                     entity, len(page.rows), page.skipped, len(changes))  # fmt: skip
        return SyncResult(entity, len(page.rows), page.skipped, len(changes))


def product_row(product: Product, now: datetime) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "price": product.price,
        "cost": product.cost,
        "currency": product.currency,
        "updated_at": now,
    }


def stock_row(level: StockLevel, now: datetime) -> dict[str, Any]:
    return {
        "sku": level.sku,
        "location": level.location,
        "quantity": level.quantity,
        "confirmed_at": now,
    }


def store_row(store: Store) -> dict[str, Any]:
    return {"store_id": store.store_id, "name": store.name, "city": store.city,
            "timezone": store.timezone}  # fmt: skip
