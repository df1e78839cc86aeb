"""Reading the e-commerce spec's properties (``products[]``, revenue, product ids). No I/O."""

from __future__ import annotations

import math
from typing import Any, Final

#: Amounts and quantities beyond this are not believed (and would overflow Redis counters).
LARGEST: Final = 1e12
MAX_QUANTITY: Final = 1_000_000


#: The types an id, label or number may be sent as (a tuple: ``str | int | float`` would
#: build a union object on every call of these hot functions).
_SCALARS: Final = (str, int, float)


def number(value: Any) -> float | None:
    """A finite number sent as a number or as text; None for anything else (booleans too)."""
    if isinstance(value, bool) or not isinstance(value, _SCALARS):
        return None
    try:
        result = float(value)
    except (ValueError, OverflowError):
        return None
    return result if math.isfinite(result) and abs(result) <= LARGEST else None


def text(value: Any) -> str | None:
    """A non-empty id or label sent as text or as a number."""
    if isinstance(value, bool) or value is None:
        return None
    if type(value) is str:
        return value.strip() or None
    if isinstance(value, _SCALARS):
        return str(value).strip() or None
    return None


def products_of(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``products[]`` of an order or cart event, else the event's own product."""
    products = properties.get("products")
    if isinstance(products, list):
        return [p for p in products if isinstance(p, dict)]
    return [properties] if product_id(properties) else []


def product_id(product: dict[str, Any]) -> str | None:
    """A product's id: ``product_id``, else ``sku``, else ``id``."""
    return text(product.get("product_id")) or text(product.get("sku")) or text(product.get("id"))


def quantity(product: dict[str, Any]) -> int:
    """A line's quantity (1 when not given; bounded to what a till could sell)."""
    value = number(product.get("quantity"))
    return min(max(int(value), 0), MAX_QUANTITY) if value is not None else 1


def revenue_of(properties: dict[str, Any]) -> float:
    """An order's revenue: ``revenue``, else ``total``, else the sum of its products."""
    for field in ("revenue", "total"):
        value = number(properties.get(field))
        if value is not None:
            return value
    return sum((number(p.get("price")) or 0.0) * quantity(p) for p in products_of(properties))


def store_of(properties: dict[str, Any], context: dict[str, Any]) -> str | None:
    """A sale's store: ``properties.store_id``, ``context.store_id`` or ``context.store.id``."""
    store = context.get("store")
    return (
        text(properties.get("store_id"))
        or text(context.get("store_id"))
        or (text(store.get("id")) if isinstance(store, dict) else None)
    )
