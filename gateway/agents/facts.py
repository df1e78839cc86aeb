"""Events → warehouse fact rows: plain functions, no I/O (the sync agent loads what they make).

Every row is keyed by something the event fixes (its id; an order's id and line), so loading
the same event twice adds nothing. Rows are made as tuples in a fixed column order
(:class:`~gateway.warehouse.base.Records`), the shape a bulk load takes without looking each
value up by name (``Records.dicts()`` gives them as dicts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

import msgspec

from gateway.datamart.commerce import number
from gateway.events import Event
from gateway.pacing import paced
from gateway.warehouse.base import Records

Row = dict[str, Any]

#: Outcome events of messages (email, push) and the status each records.
MESSAGE_STATUSES: Final = {
    "Email Sent": "sent",
    "Email Delivered": "delivered",
    "Email Opened": "opened",
    "Email Link Clicked": "clicked",
    "Unsubscribed": "unsubscribed",
    "Email Bounced": "bounced",
    "Push Sent": "sent",
    "Push Delivered": "delivered",
    "Push Opened": "opened",
}
ORDER_EVENTS: Final = {"Order Completed": "sale", "Order Refunded": "return"}
#: Properties that may hold a person's contact details: never copied into the warehouse.
PII_PROPERTIES: Final = frozenset({"email", "phone", "name", "first_name", "last_name", "address"})

EVENT_COLUMNS: Final = (
    "event_id", "site", "channel", "type", "name", "ts", "received_at", "date_key",
    "customer_id", "anonymous_id", "session_id", "is_bot", "device_type", "browser", "os",
    "country", "referrer_class", "campaign", "path", "store_id", "sku", "category", "revenue",
    "properties",
)  # fmt: skip
SALE_COLUMNS: Final = (
    "order_id", "line_no", "event_id", "ts", "date_key", "site", "channel", "store_id",
    "customer_id", "sku", "category", "quantity", "unit_price", "discount", "revenue",
    "currency", "kind",
)  # fmt: skip
MESSAGE_COLUMNS: Final = (
    "message_id", "ts", "date_key", "channel", "campaign_id", "customer_id", "status", "event_id",
)  # fmt: skip

_EMPTY: Final[dict[str, Any]] = {}
#: Values JSON has no type for (bytes from msgpack...) are written as their text.
_json: Final = msgspec.json.Encoder(enc_hook=str)


def date_key(ts: datetime) -> int:
    return ts.year * 10_000 + ts.month * 100 + ts.day


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    return None if value is None or value == "" else str(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else _EMPTY


def properties_json(props: dict[str, Any]) -> str:
    """The properties as JSON text, contact details left out."""
    if not PII_PROPERTIES.isdisjoint(props):
        props = {k: v for k, v in props.items() if k not in PII_PROPERTIES}
    return _json.encode(props).decode()


def event_record(event: Event) -> tuple[Any, ...]:
    """One ``fact_event`` row, in the order of :data:`EVENT_COLUMNS`."""
    context, props = event.context, event.properties
    get = context.get
    agent, page = _dict(get("userAgentData")), _dict(get("page"))
    ts = event.timestamp
    name = event.name
    return (
        event.event_id,
        event.site,
        event.channel,
        event.type,
        name,
        ts,
        event.received_at,
        ts.year * 10_000 + ts.month * 100 + ts.day,
        event.customer_id,
        event.anonymous_id,
        event.session_id,
        bool(get("bot")),
        _text(agent.get("deviceType")),
        _text(agent.get("browser")),
        _text(agent.get("os")),
        _text(_dict(get("location")).get("country")),
        _text(get("referrerClass")),
        _text(_dict(get("campaign")).get("name")),
        _text(page.get("path") or props.get("path")),
        _text(props.get("store_id") or get("store")),
        _text(props.get("sku") or props.get("product_id")),
        _text(props.get("category")),
        number(props.get("revenue", props.get("total"))) if name in ORDER_EVENTS else None,
        properties_json(props),
    )


def sale_records(event: Event) -> list[tuple[Any, ...]]:
    """``fact_sale`` lines of an ``Order Completed`` / ``Order Refunded`` (e-commerce spec),
    in the order of :data:`SALE_COLUMNS`."""
    kind = ORDER_EVENTS.get(event.name or "")
    if kind is None:
        return []
    props = event.properties
    order_id = _text(props.get("order_id"))
    products = props.get("products")
    if order_id is None or not isinstance(products, list):
        return []
    sign = -1.0 if kind == "return" else 1.0
    store = _text(props.get("store_id") or event.context.get("store"))
    currency = _text(props.get("currency"))
    ts = event.timestamp
    day = date_key(ts)
    rows = []
    for line_no, product in enumerate([p for p in products if isinstance(p, dict)]):
        quantity = number(product.get("quantity")) or 1.0
        price = number(product.get("price")) or 0.0
        discount = number(product.get("discount")) or 0.0
        rows.append(
            (
                order_id,
                line_no,
                event.event_id,
                ts,
                day,
                event.site,
                event.channel,
                store,
                event.customer_id,
                _text(product.get("sku") or product.get("product_id")),
                _text(product.get("category")),
                sign * quantity,
                price,
                discount,
                sign * (quantity * price - discount),
                currency,
                kind,
            )
        )
    return rows


def message_record(event: Event) -> tuple[Any, ...] | None:
    """A ``fact_message`` row for a message outcome event (order of :data:`MESSAGE_COLUMNS`)."""
    status = MESSAGE_STATUSES.get(event.name or "")
    if status is None:
        return None
    return (
        event.event_id,
        event.timestamp,
        date_key(event.timestamp),
        event.channel,
        _text(event.properties.get("campaign_id")),
        event.customer_id,
        status,
        event.event_id,
    )


class _Facts:
    """The rows of a batch's fact tables, added a run of events at a time."""

    __slots__ = ("messages", "rows", "sales")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.sales: list[tuple[Any, ...]] = []
        self.messages: list[tuple[Any, ...]] = []

    def add(self, events: Iterable[Event]) -> None:
        rows, sales, messages = self.rows, self.sales, self.messages
        for event in events:
            rows.append(event_record(event))
            name = event.name
            if name in ORDER_EVENTS:
                sales += sale_records(event)
            elif name in MESSAGE_STATUSES and (message := message_record(event)) is not None:
                messages.append(message)

    def records(self) -> list[Records]:
        """Per table with rows, its :class:`Records`."""
        found = [
            Records("fact_event", EVENT_COLUMNS, self.rows),
            Records("fact_sale", SALE_COLUMNS, self.sales),
            Records("fact_message", MESSAGE_COLUMNS, self.messages),
        ]
        return [r for r in found if r.rows]


def fact_records(events: Iterable[Event]) -> list[Records]:
    """The rows of every fact table a batch of events loads (tables without rows left out)."""
    facts = _Facts()
    facts.add(events)
    return facts.records()


async def paced_fact_records(events: Sequence[Event]) -> list[Records]:
    """:func:`fact_records`, giving the event loop back between runs of events
    (:mod:`gateway.pacing`)."""
    facts = _Facts()
    async for part in paced(events, step="facts"):
        facts.add(part)
    return facts.records()
