"""What every ERP connector gives: typed rows per entity, read incrementally from a cursor.

A cursor is the connector's own bookmark (an ERP's last write date, a drop file's identity);
``None`` asks for everything. A read yields pages; each page carries the cursor to keep once
it is loaded (a connector that cannot resume mid-read repeats the old cursor until its last
page), so a sync interrupted half-way resumes near where it stopped and never skips a row.
Rows are checked here, without I/O: a malformed row is logged with its id, skipped and
counted, and never stops the sync.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

import msgspec

from gateway.errors import TouchpointError

log = logging.getLogger(__name__)

Entity = Literal["stores", "products", "stock", "customers", "sales"]
ENTITIES: tuple[Entity, ...] = get_args(Entity)


class ErpUnavailable(TouchpointError):
    """The ERP (or its drop folder) cannot be read now; the sync backs off and retries."""


class Product(msgspec.Struct, frozen=True):
    sku: str
    name: str
    price: float
    currency: str
    category: str | None = None
    cost: float | None = None
    #: False once the ERP deactivated it (discontinued): never offered, whatever its stock.
    active: bool = True
    #: The ERP's own id for it, when it has one besides the SKU (Tryton's record id): a SKU
    #: changed in the ERP is then seen as the same product renamed.
    erp_id: str | None = None


class StockLevel(msgspec.Struct, frozen=True):
    sku: str
    location: str
    quantity: float


class Store(msgspec.Struct, frozen=True):
    store_id: str
    name: str | None = None
    city: str | None = None
    timezone: str | None = None


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
    quantity: float
    unit_price: float
    currency: str
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
    """What one read returned: the rows, the cursor to read from next time, the rows skipped.

    ``token`` is the connector's own note for :meth:`Connector.confirm` (the files read)."""

    rows: list[T]
    cursor: str | None
    skipped: int = 0
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
    entity: Entity, raw: Iterable[Mapping[str, Any]], where: str = ""
) -> tuple[list[Any], int]:
    """Typed rows from ``raw`` (strings are converted: ``"89.90"`` → 89.9; empty cells are
    missing values) and how many were malformed (logged with their id, then skipped)."""
    kind = ROW_TYPES[entity]
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
            rows.append(msgspec.convert(given, kind, strict=False))
        except msgspec.ValidationError as exc:
            skipped += 1
            ident = given.get(ID_FIELDS[entity], f"row {n}")
            log.warning("erp %s%s: skipped %s: %s", entity, where, ident, exc)
    return rows, skipped
