"""One sync of one entity: read the connector's pages; for each, load the warehouse, publish
what changed, update the cache, then confirm the page to the connector.

What each entity becomes:

    stores     dim_store
    products   dim_product
    stock      product_stock, the stock cache in Redis, a ``Stock Changed`` event per level
               that changed (none on the very first stock sync: a baseline is not a change)
    customers  an ``identify`` event per new or changed party (traits ``erpPartyId``,
               ``email``, ``phone``, ``name``): the identity agent links it to the customer
               who holds that party id or e-mail, the profile and ``dim_customer`` follow
    sales      an ``Order Completed`` event per order (lines in ``products``; a connector
               keeps an order's lines in one page), so ``fact_sale`` and the profile
               counters get it like any order; an order cancelled after it was loaded
               becomes an ``Order Refunded`` of the same lines (``<id>:cancelled``)

The order makes a crash harmless: the warehouse upserts are idempotent; events carry ids
derived from their content, so a replay is dropped by the collector's filter; the cache (and
the cursor with it) is written after the events, so a retry still sees the change; loaded
orders are remembered (``erp_sales``) so a re-read, even a full one, never counts one twice;
the connector forgets the page (moves its files to ``done/``) last. A sync that fails (the ERP
unreachable, the warehouse down) keeps the last known data, marks the entity stale and is
retried after a capped exponential backoff.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.bus import Bus
from gateway.config import ErpConfig
from gateway.erp import stock
from gateway.erp.base import (
    ENTITIES,
    Connector,
    Customer,
    Entity,
    Page,
    Product,
    SaleLine,
    StockLevel,
    Store,
)
from gateway.errors import BusUnavailable
from gateway.events import Event, as_utc
from gateway.keys import EVENTS, Keys
from gateway.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Entities the agent keeps in sync, in the order a full sync takes them.
SYNCED: Final[tuple[Entity, ...]] = ENTITIES
STOCK_CHANGED: Final = "Stock Changed"
#: A renamed product's stock rows, copied to its new SKU ($1) from the old one ($2).
CARRY_STOCK_SQL: Final = """
INSERT INTO product_stock (sku, location, quantity, confirmed_at)
SELECT $1, location, quantity, confirmed_at FROM product_stock WHERE sku = $2
ON CONFLICT DO NOTHING"""
#: Called after each page with the rows it held and the read's expected total (if known).
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class SyncResult:
    entity: Entity
    rows: int = 0
    skipped: int = 0
    changed: int = 0
    error: str | None = None
    #: What could not be read at all (a drop file moved to ``failed/``): its name → why.
    failed: dict[str, str] | None = None

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


def latest_levels(levels: list[StockLevel]) -> list[StockLevel]:
    """The last level per (sku, location) of a page."""
    return list({(level.sku, level.location): level for level in levels}.values())


def stock_changes(levels: list[StockLevel], known: dict[tuple[str, str], float]) -> list[Change]:
    """The levels (one per sku and location) that differ from ``known``."""
    return [
        Change(level.sku, level.location, old, level.quantity)
        for level in levels
        if (old := known.get((level.sku, level.location))) != level.quantity
    ]


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


def change_event(change: Change, site: str, cursor: str | None, now: datetime) -> Event:
    digest = _digest(change.sku, change.location, change.old, change.new, cursor)
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


def customer_event(customer: Customer, site: str, now: datetime) -> Event:
    """The ``identify`` an ERP party becomes; the same values always make the same id."""
    given = {"erpPartyId": customer.party_id, "email": customer.email,
             "phone": customer.phone, "name": customer.name}  # fmt: skip
    traits = {k: v for k, v in given.items() if v is not None}
    return Event(
        event_id=f"erp-party-{_digest(*traits.values())}",
        type="identify",
        channel="erp",
        site=site,
        timestamp=now,
        received_at=now,
        traits=traits,
    )


def order_event(lines: list[SaleLine], site: str, now: datetime, *, cancel: bool = False) -> Event:
    """The ``Order Completed`` (``cancel``: the ``Order Refunded``) of one ERP order's lines."""
    first = lines[0]
    order_id = f"{first.order_id}:cancelled" if cancel else first.order_id
    total = sum(line.quantity * line.unit_price for line in lines)
    properties: dict[str, Any] = {
        "order_id": order_id,
        "revenue": -total if cancel else total,
        "total": -total if cancel else total,
        "currency": first.currency,
        "products": [
            {"sku": line.sku, "quantity": line.quantity, "price": line.unit_price} for line in lines
        ],
    }
    if first.store_id is not None:
        properties["store_id"] = first.store_id
    if cancel:
        properties["original_order_id"] = first.order_id
    traits = {"erpPartyId": first.party_id} if first.party_id is not None else {}
    return Event(
        event_id=f"erp-{'cancel' if cancel else 'sale'}-{_digest(first.order_id)}",
        type="track",
        name="Order Refunded" if cancel else "Order Completed",
        channel="erp",
        site=site,
        timestamp=now if cancel else as_utc(first.ordered_at),
        received_at=now,
        properties=properties,
        context={"traits": traits} if traits else {},
    )


def orders_of(lines: list[SaleLine]) -> list[list[SaleLine]]:
    """The page's orders, each with its lines, in the order they came."""
    orders: dict[str, list[SaleLine]] = {}
    for line in lines:
        orders.setdefault(line.order_id, []).append(line)
    return list(orders.values())


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
        #: Whose cursors these are (another connector's mean nothing to this one).
        self.kind = type(connector).__name__
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
            "customers": settings.customers_interval,
            "sales": settings.sales_interval,
        }
        self.next_due: dict[Entity, float] = dict.fromkeys(SYNCED, 0.0)
        self.failures: dict[Entity, int] = dict.fromkeys(SYNCED, 0)

    async def run_due(self) -> list[SyncResult]:
        """Sync every entity whose time has come (all of them on the first call)."""
        return [await self.sync(e) for e in SYNCED if self.clock() >= self.next_due[e]]

    async def sync(
        self, entity: Entity, *, full: bool = False, progress: Progress | None = None
    ) -> SyncResult:
        """Sync ``entity`` now (``full``: from no cursor); never raises for an ERP failure,
        only BusUnavailable when Redis cannot even keep that the sync failed."""
        try:
            result = await self._sync(entity, full, progress)
        except Exception as exc:
            failures = self.failures[entity] = self.failures.get(entity, 0) + 1
            delay = retry_delay(self.intervals[entity], failures, self.settings.max_backoff)
            self.next_due[entity] = self.clock() + delay
            error = f"{type(exc).__name__}: {exc}"[:300]
            try:
                await stock.record_failure(self.redis, self.keys, entity, error, failures)
            except (RedisError, OSError) as down:  # nowhere to keep it: the caller says why
                raise BusUnavailable(f"erp {entity}: Redis: {down}") from down
            log.warning("erp %s: sync failed (%d in a row, next in %.0f s): %s",
                        entity, failures, delay, error)  # fmt: skip
            return SyncResult(entity, error=error)
        self.failures[entity] = 0
        self.next_due[entity] = self.clock() + self.intervals[entity]
        return result

    async def _sync(self, entity: Entity, full: bool, progress: Progress | None) -> SyncResult:
        kind = self.kind
        cursor = None if full else await stock.cursor(self.redis, self.keys, entity, kind)
        baseline = entity == "stock" and await stock.last_sync(self.redis, self.keys) is None
        now = datetime.now(UTC)
        rows = skipped = changed = 0
        failed: dict[str, str] = {}
        pages = self.connector.read(entity, cursor)
        async with contextlib.aclosing(pages):  # a failed load lets go of the ERP at once
            async for page in pages:
                count = await self._page(entity, page, now, baseline)
                rows, skipped = rows + len(page.rows), skipped + page.skipped
                changed += count
                failed |= page.failed
                if progress is not None:
                    progress(len(page.rows) + page.skipped, page.total)
        fields = {"rows": rows, "skipped": skipped, "changed": changed}
        await stock.record_success(self.redis, self.keys, entity, now, fields)
        if rows or skipped:
            log.info("erp %s: %d rows, %d skipped, %d changed", entity, rows, skipped, changed)
        return SyncResult(entity, rows, skipped, changed, failed=failed or None)

    async def _page(self, entity: Entity, page: Page[Any], now: datetime, baseline: bool) -> int:
        """Load one page, keep its cursor, confirm it; return the events it published."""
        levels: list[StockLevel] = []
        if entity == "stock":
            levels, count = await self._stock(page, now, baseline)
        elif entity == "sales":
            count = await self._sales(page.rows, now)
        else:
            count = await self._load(entity, page.rows, now)
        await stock.record_page(self.redis, self.keys, entity, self.kind, page.cursor, levels)
        await self.connector.confirm(entity, page)
        return count

    async def _load(self, entity: Entity, rows: list[Any], now: datetime) -> int:
        """Products, stores: the warehouse. Customers: an identify per new or changed party."""
        if not rows:
            return 0
        if entity == "products":
            return await self._products(rows, now)
        if entity == "stores":
            return await self.warehouse.upsert("dim_store", [store_row(s) for s in rows])
        if entity == "customers":
            latest = {c.party_id: c for c in rows}
            events = [customer_event(c, self.settings.site, now) for c in latest.values()]
            await self.bus.publish(EVENTS, events)
            return len(events)
        raise ValueError(f"entity {entity!r} is not synced")

    async def _products(self, products: list[Product], now: datetime) -> int:
        """``dim_product``, and what the cache says is sold. A SKU the ERP renamed leaves its
        old SKU discontinued, and its stock goes to the new one."""
        loaded = await self.warehouse.upsert("dim_product", [product_row(p, now) for p in products])
        renames = await stock.renamed(self.redis, self.keys, products)
        if renames:
            gone = [{"sku": old, "active": False, "updated_at": now} for old, _ in renames]
            await self.warehouse.upsert("dim_product", gone)
            for old, new in renames:
                await self.warehouse.execute(CARRY_STOCK_SQL, [new, old])
        active = {old: False for old, _ in renames} | {p.sku: p.active for p in products}
        await stock.record_active(self.redis, self.keys, active)
        await stock.record_names(self.redis, self.keys, products, renames)
        return loaded

    async def _stock(
        self, page: Page[StockLevel], now: datetime, baseline: bool
    ) -> tuple[list[StockLevel], int]:
        levels = latest_levels(page.rows)
        if levels:
            await self.warehouse.upsert("product_stock", [stock_row(s, now) for s in levels])
        if baseline:  # the first sync publishes nothing: what the cache held does not matter
            return levels, 0
        changes = stock_changes(levels, await stock.known_levels(self.redis, self.keys, levels))
        if changes:
            site = self.settings.site
            await self.bus.publish(
                EVENTS, [change_event(c, site, page.cursor, now) for c in changes]
            )
        return levels, len(changes)

    async def _sales(self, lines: list[SaleLine], now: datetime) -> int:
        """Publish the orders not loaded yet (and the cancellations of loaded ones); return
        how many."""
        orders = orders_of(lines)
        if not orders:
            return 0
        states = await stock.sale_states(self.redis, self.keys, [o[0].order_id for o in orders])
        site = self.settings.site
        events, marks = [], {}
        for order in orders:
            order_id, state = order[0].order_id, order[-1].state
            was = states.get(order_id)
            if state == "done" and was is None:
                events.append(order_event(order, site, now))
            elif state == "cancelled" and was == "done":
                events.append(order_event(order, site, now, cancel=True))
            elif state != "cancelled" or was is not None:
                continue
            marks[order_id] = state
        if events:
            await self.bus.publish(EVENTS, events)
        if marks:
            await stock.mark_sales(self.redis, self.keys, marks)
        return len(events)


def product_row(product: Product, now: datetime) -> dict[str, Any]:
    return {
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "price": product.price,
        "cost": product.cost,
        "currency": product.currency,
        "active": product.active,
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
