"""What every ERP connector gives: typed rows per entity, read incrementally from a cursor.

A cursor is the connector's own bookmark (an ERP's last write date, a drop file's identity);
``None`` asks for everything. A read yields pages; each page carries the cursor to keep once
it is loaded (a connector that cannot resume mid-read repeats the old cursor until its last
page), so a sync interrupted half-way resumes near where it stopped and never skips a row.
Rows are checked here, without I/O: a malformed row (a field missing or of the wrong type, a
number that is not finite or not believable, a NUL character, a sale dated when no event can
be) is logged with its id, skipped and counted, and never stops the sync.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from gateway.datamart.commerce import LARGEST, MAX_QUANTITY
from gateway.errors import EventError, TouchpointError
from gateway.events import checked_time

log = logging.getLogger(__name__)

Entity = Literal["stores", "products", "stock", "customers", "sales"]
ENTITIES: tuple[Entity, ...] = get_args(Entity)


class ErpUnavailable(TouchpointError):
    """The ERP (or its drop folder) cannot be read now; the sync backs off and retries."""


#: Amounts and stock as the data mart believes them (gateway.datamart.commerce): finite and
#: bounded. The sign is the ERP's business (a discount line, stock counted below zero).
Amount = Annotated[float, msgspec.Meta(ge=-LARGEST, le=LARGEST)]
#: What one sale line can hold (more would be clamped in ``fact_sale``, not the revenue).
Quantity = Annotated[float, msgspec.Meta(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]


class Product(msgspec.Struct, frozen=True):
    sku: str
    name: str
    price: Amount
    currency: Currency
    category: str | None = None
    cost: Amount | None = None
    #: False once the ERP deactivated it (discontinued): never offered, whatever its stock.
    active: bool = True
    #: The ERP's own id for it, when it has one besides the SKU (Tryton's record id): a SKU
    #: changed in the ERP is then seen as the same product renamed.
    erp_id: str | None = None


class StockLevel(msgspec.Struct, frozen=True):
    sku: str
    location: str
    quantity: Amount


class Store(msgspec.Struct, frozen=True):
    store_id: str
    name: str | None = None
    city: str | None = None
    timezone: str | None = None

    def __post_init__(self) -> None:
        if self.timezone is None:
            return
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"unknown time zone {self.timezone!r} (an IANA name)") from None


class Customer(msgspec.Struct, frozen=True):
    party_id: str
    email: str | None = None
    phone: str | None = None
    name: str | None = None


class SaleLine(msgspec.Struct, frozen=True):
    """One line of an ERP sale; the lines of one ``order_id`` make one order. A connector
    yields every line of an order in the same page (the page is the order's version)."""

    order_id: str
    sku: str
    quantity: Quantity
    unit_price: Amount
    currency: Currency
    #: Without an offset: UTC.
    ordered_at: datetime
    party_id: str | None = None
    store_id: str | None = None
    #: ``done`` (counted) or ``cancelled`` (an order already loaded is voided).
    state: Literal["done", "cancelled"] = "done"


Row = Product | StockLevel | Store | Customer | SaleLine
T = TypeVar("T", Product, StockLevel, Store, Customer, SaleLine)

ROW_TYPES: Mapping[Entity, type[Row]] = {
    "products": Product,
    "stock": StockLevel,
    "stores": Store,
    "customers": Customer,
    "sales": SaleLine,
}
#: The field that names a row in logs (its id).
ID_FIELDS: Mapping[Entity, str] = {
    "products": "sku",
    "stock": "sku",
    "stores": "store_id",
    "customers": "party_id",
    "sales": "order_id",
}


@dataclass
class Page(Generic[T]):
    """What one read returned: the rows, the cursor to read from next time, the rows skipped,
    and what could not be read at all (``failed``: a drop file's name → why).

    ``token`` is the connector's own note for :meth:`Connector.confirm` (the files read)."""

    rows: list[T]
    cursor: str | None
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    token: Any = field(default=None, repr=False)
    #: Rows the whole read is expected to hold, when the connector knows (progress bars).
    total: int | None = None


class Connector(Protocol):
    """One ERP. Reads may raise :class:`ErpUnavailable` (or any error: the sync backs off)."""

    def read(self, entity: Entity, cursor: str | None) -> AsyncGenerator[Page[Any], None]:
        """The rows of ``entity`` changed since ``cursor`` (all when None), page by page; the
        rows' type is ``ROW_TYPES[entity]``."""
        ...

    async def confirm(self, entity: Entity, page: Page[Any]) -> None:
        """The page is loaded: a drop connector moves its files to ``done/``."""
        ...

    async def close(self) -> None:
        """Release connections and sessions."""
        ...


def check_rows(
    entity: Entity,
    raw: Iterable[Mapping[str, Any]],
    where: str = "",
    now: datetime | None = None,
) -> tuple[list[Any], int]:
    """Typed rows from ``raw`` (strings are converted: ``"89.90"`` → 89.9; empty cells are
    missing values) and how many were malformed (logged with their id, then skipped). A sale
    becomes an event: it must be dated when events can be, as of ``now`` (default: now)."""
    kind = ROW_TYPES[entity]
    now = now or datetime.now(UTC)
    rows: list[Any] = []
    skipped = 0
    for n, values in enumerate(raw, 1):
        given = {}
        for key, value in values.items():
            if isinstance(value, str):
                value = value.strip()
            if value is not None and value != "":
                given[key] = value
        try:
            for key, value in given.items():
                if isinstance(value, str) and "\0" in value:  # PostgreSQL refuses it in text
                    raise EventError("holds a NUL character", key)
            if isinstance(currency := given.get("currency"), str):
                given["currency"] = currency.strip().upper()  # "eur" is EUR
            row = msgspec.convert(given, kind, strict=False)
            if isinstance(row, SaleLine):
                checked_time(row.ordered_at, now, "ordered_at")
            rows.append(row)
        except (msgspec.ValidationError, EventError) as exc:
            skipped += 1
            ident = given.get(ID_FIELDS[entity], f"row {n}")
            log.warning("erp %s%s: skipped %s: %s", entity, where, ident, exc)
    return rows, skipped
