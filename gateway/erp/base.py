"""What every ERP connector gives: typed rows per entity, read incrementally from a cursor.

A cursor is the connector's own bookmark (an ERP's last write date, a drop file's identity);
``None`` asks for everything. Rows are checked here, without I/O: a malformed row is logged
with its id, skipped and counted, and never stops the sync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

import msgspec

from gateway.errors import TouchpointError

log = logging.getLogger(__name__)

Entity = Literal["products", "stock", "stores", "customers"]
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


Row = Product | StockLevel | Store | Customer
T = TypeVar("T", Product, StockLevel, Store, Customer)

ROW_TYPES: Mapping[Entity, type[Row]] = {
    "products": Product,
    "stock": StockLevel,
    "stores": Store,
    "customers": Customer,
}
#: The field that names a row in logs (its id).
ID_FIELDS: Mapping[Entity, str] = {
    "products": "sku",
    "stock": "sku",
    "stores": "store_id",
    "customers": "party_id",
}


@dataclass
class Page(Generic[T]):
    """What one read returned: the rows, the cursor to read from next time, the rows skipped.

    ``token`` is the connector's own note for :meth:`Connector.confirm` (the files read)."""

    rows: list[T]
    cursor: str | None
    skipped: int = 0
    token: Any = field(default=None, repr=False)


class Connector(Protocol):
    """One ERP. Reads may raise :class:`ErpUnavailable` (or any error: the sync backs off)."""

    async def products(self, cursor: str | None) -> Page[Product]: ...

    async def stock(self, cursor: str | None) -> Page[StockLevel]: ...

    async def stores(self, cursor: str | None) -> Page[Store]: ...

    async def customers(self, cursor: str | None) -> Page[Customer]: ...

    async def confirm(self, entity: Entity, page: Page[Any]) -> None:
        """The page is loaded: a drop connector moves its files to ``done/``."""
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
        given = {k: v.strip() if isinstance(v, str) else v for k, v in values.items()}
        given = {k: v for k, v in given.items() if v not in ("", None)}
        try:
            rows.append(msgspec.convert(given, kind, strict=False))
        except msgspec.ValidationError as exc:
            skipped += 1
            ident = given.get(ID_FIELDS[entity], f"row {n}")
            log.warning("erp %s%s: skipped %s: %s", entity, where, ident, exc)
    return rows, skipped
