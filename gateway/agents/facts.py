"""Events → warehouse fact rows: plain functions, no I/O (the sync agent loads what they make).

Every row is keyed by something the event fixes (its id; an order's id and line), so loading
the same event twice adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from gateway.events import Event

Row = dict[str, Any]

#: The fact tables one batch of events loads.
FACT_TABLES: Final = ("fact_event", "fact_sale", "fact_message")

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


def date_key(ts: datetime) -> int:
    return ts.year * 10_000 + ts.month * 100 + ts.day


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def event_row(event: Event) -> Row:
    """One ``fact_event`` row."""
    context, props = event.context, event.properties
    agent, page = _dict(context.get("userAgentData")), _dict(context.get("page"))
    campaign, location = _dict(context.get("campaign")), _dict(context.get("location"))
    return {
        "event_id": event.event_id,
        "site": event.site,
        "channel": event.channel,
        "type": event.type,
        "name": event.name,
        "ts": event.timestamp,
        "received_at": event.received_at,
        "date_key": date_key(event.timestamp),
        "customer_id": event.customer_id,
        "anonymous_id": event.anonymous_id,
        "session_id": event.session_id,
        "is_bot": bool(context.get("bot")),
        "device_type": _text(agent.get("deviceType")),
        "browser": _text(agent.get("browser")),
        "os": _text(agent.get("os")),
        "country": _text(location.get("country")),
        "referrer_class": _text(context.get("referrerClass")),
        "campaign": _text(campaign.get("name")),
        "path": _text(page.get("path") or props.get("path")),
        "store_id": _text(props.get("store_id") or context.get("store")),
        "sku": _text(props.get("sku") or props.get("product_id")),
        "category": _text(props.get("category")),
        "revenue": _number(props.get("revenue", props.get("total")))
        if event.name in ORDER_EVENTS
        else None,
        "properties": json.dumps(
            {k: v for k, v in props.items() if k not in PII_PROPERTIES}, default=str
        ),
    }


def sale_rows(event: Event) -> list[Row]:
    """``fact_sale`` lines of an ``Order Completed`` / ``Order Refunded`` (e-commerce spec)."""
    kind = ORDER_EVENTS.get(event.name or "")
    props = event.properties
    order_id = _text(props.get("order_id"))
    products = props.get("products")
    if kind is None or order_id is None or not isinstance(products, list):
        return []
    sign = -1.0 if kind == "return" else 1.0
    rows = []
    for line_no, product in enumerate(p for p in products if isinstance(p, dict)):
        quantity = _number(product.get("quantity")) or 1.0
        price = _number(product.get("price")) or 0.0
        discount = _number(product.get("discount")) or 0.0
        rows.append(
            {
                "order_id": order_id,
                "line_no": line_no,
                "event_id": event.event_id,
                "ts": event.timestamp,
                "date_key": date_key(event.timestamp),
                "site": event.site,
                "channel": event.channel,
                "store_id": _text(props.get("store_id") or event.context.get("store")),
                "customer_id": event.customer_id,
                "sku": _text(product.get("sku") or product.get("product_id")),
                "category": _text(product.get("category")),
                "quantity": sign * quantity,
                "unit_price": price,
                "discount": discount,
                "revenue": sign * (quantity * price - discount),
                "currency": _text(props.get("currency")),
                "kind": kind,
            }
        )
    return rows


def message_row(event: Event) -> Row | None:
    """A ``fact_message`` row for a message outcome event."""
    status = MESSAGE_STATUSES.get(event.name or "")
    if status is None:
        return None
    return {
        "message_id": event.event_id,
        "ts": event.timestamp,
        "date_key": date_key(event.timestamp),
        "channel": event.channel,
        "campaign_id": _text(event.properties.get("campaign_id")),
        "customer_id": event.customer_id,
        "status": status,
        "event_id": event.event_id,
    }


def facts(events: Iterable[Event]) -> dict[str, list[Row]]:
    """Rows per fact table for a batch of events."""
    out: dict[str, list[Row]] = {"fact_event": [], "fact_sale": [], "fact_message": []}
    for event in events:
        out["fact_event"].append(event_row(event))
        out["fact_sale"].extend(sale_rows(event))
        if (row := message_row(event)) is not None:
            out["fact_message"].append(row)
    return out
