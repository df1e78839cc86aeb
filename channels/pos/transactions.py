"""A till's transaction and the event it becomes. Plain functions, no I/O.

A :class:`Transaction` is one sale, return or void, validated strictly (unknown fields refused,
every error names its field). :func:`to_event` turns it into the e-commerce spec's
``Order Completed`` (sale), ``Order Refunded`` (return) or the track ``Order Voided`` (void:
recorded, never a sale), on channel ``pos`` and the store's site.

Its id is derived from (store, terminal, receipt, kind), so a till that sends the same receipt
twice (a retry, an offline batch after a live attempt, a re-import) makes the same event, which
the ingest de-duplication and the idempotent sinks count once.

Who bought: the loyalty card goes where the identity agent reads it (``context.traits
.loyaltyCard`` and ``properties.loyalty_card``), the e-mail into ``context.traits.email``. An
event needs an anonymous id; it is ``lc-<card>``, else ``em-`` + a keyed hash of the e-mail
(the warehouse's PII key, so no address is readable in ``fact_event``), else the receipt's own
``rc-<store>:<terminal>:<receipt>`` (an unknown shopper, who joins no one).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from gateway.config import StoreConfig
from gateway.datamart.commerce import LARGEST, MAX_QUANTITY
from gateway.errors import EventError
from gateway.events import Event, checked_time

Kind = Literal["sale", "return", "void"]
#: The event each kind of transaction becomes.
EVENT_NAMES: Final[dict[str, str]] = {
    "sale": "Order Completed",
    "return": "Order Refunded",
    "void": "Order Voided",
}

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
TerminalId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Money = Annotated[float, msgspec.Meta(ge=0, le=LARGEST)]
Quantity = Annotated[float, msgspec.Meta(gt=0, le=MAX_QUANTITY)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
Tender = Literal["cash", "card", "contactless", "mobile", "voucher", "gift_card", "mixed", "other"]


class Line(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One item of a receipt: ``sku`` and/or ``product_id``; ``discount`` is for the line."""

    sku: Code | None = None
    product_id: Code | None = None
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    category: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    quantity: Quantity
    unit_price: Money
    discount: Money = 0.0


class Transaction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a till sends: one sale, return or void. ``time`` without an offset is store time."""

    kind: Kind = "sale"
    store: TerminalId
    terminal: TerminalId
    receipt: Code
    time: datetime
    lines: Annotated[list[Line], msgspec.Meta(max_length=1000)]
    #: What the customer paid (sale) or got back (return), after every discount, tax included.
    total: Money
    subtotal: Money | None = None
    tax: Money | None = None
    #: Discount on the whole receipt (line discounts are on their lines).
    discount: Money = 0.0
    currency: Currency | None = None
    tender: Tender
    loyalty_card: Code | None = None
    email: Annotated[str, msgspec.Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    #: A return's or a void's original sale receipt.
    original_receipt: Code | None = None
    #: Kiosk coupons the sale redeems (each goes to one order only).
    coupons: Annotated[list[Code], msgspec.Meta(max_length=10)] = []

    @property
    def order_id(self) -> str:
        return f"{self.store}:{self.terminal}:{self.receipt}"

    @property
    def original_order_id(self) -> str | None:
        """The order a return or a void is about (its sale on this till), if it names one."""
        if self.original_receipt is None:
            return None
        return f"{self.store}:{self.terminal}:{self.original_receipt}"


_decoder: Final = msgspec.json.Decoder(Transaction)


def decode(raw: bytes | str) -> Transaction:
    """One JSON transaction; EventError naming the field (``lines[0].quantity``) otherwise."""
    try:
        txn = _decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        raise field_error(exc) from None
    check(txn)
    return txn


def check(txn: Transaction) -> None:
    """What the types alone cannot say."""
    if txn.kind != "void" and not txn.lines:
        raise EventError(f"a {txn.kind} needs at least one line", "lines")
    for i, line in enumerate(txn.lines):
        if line.sku is None and line.product_id is None:
            raise EventError("sku or product_id is required", f"lines[{i}].sku")
    if txn.coupons and txn.kind != "sale":
        raise EventError(f"a {txn.kind} redeems no coupon", "coupons")


def field_error(exc: msgspec.MsgspecError) -> EventError:
    """``Expected `int`, got `str` - at `$.lines[0].quantity``` → EventError(field=...)."""
    reason, _, at = str(exc).partition(" - at ")
    field = at.strip("`").removeprefix("$").removeprefix(".") or None
    if reason.startswith("Object missing required field"):
        missing = reason.split("`")[1]
        field, reason = (f"{field}.{missing}" if field else missing), "is required"
    elif reason.startswith("Object contains unknown field"):
        unknown = reason.split("`")[1]
        field, reason = (f"{field}.{unknown}" if field else unknown), "unknown field"
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        reason = f"invalid JSON: {reason}"
    return EventError(reason.replace("`", ""), field)


def event_id(store: str, terminal: str, receipt: str, kind: str) -> str:
    """The same for every copy of one receipt's transaction: retries count once."""
    digest = hashlib.blake2b(f"{store}\0{terminal}\0{receipt}\0{kind}".encode(), digest_size=16)
    return "pos-" + digest.hexdigest()


def anonymous_id(txn: Transaction, email_hash: str | None) -> str:
    """``lc-<card>``, else ``em-<keyed hash of the e-mail>``, else ``rc-<order id>``."""
    if txn.loyalty_card:
        return f"lc-{txn.loyalty_card}"
    if email_hash:
        return f"em-{email_hash[:32]}"
    return f"rc-{txn.order_id}"


def to_event(
    txn: Transaction,
    store: StoreConfig,
    *,
    received_at: datetime,
    email_hash: str | None = None,
) -> Event:
    """The event a transaction becomes (``email_hash``: the keyed hash of ``txn.email``)."""
    when = txn.time
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(store.timezone))
    when = checked_time(when, received_at, "time")
    sign = -1.0 if txn.kind == "return" else 1.0
    currency = txn.currency or store.currency
    products = [_product(line) for line in txn.lines]
    properties: dict[str, object] = {
        "order_id": txn.order_id,
        "store_id": txn.store,
        "terminal_id": txn.terminal,
        "receipt": txn.receipt,
        "revenue": sign * txn.total,
        "total": sign * txn.total,
        "discount": txn.discount,
        "currency": currency,
        "tender": txn.tender,
        "products": products,
    }
    if txn.subtotal is not None:
        properties["subtotal"] = sign * txn.subtotal
    if txn.tax is not None:
        properties["tax"] = sign * txn.tax
    if txn.coupons:
        properties["coupons"] = list(dict.fromkeys(txn.coupons))
    if txn.original_order_id is not None:
        properties["original_order_id"] = txn.original_order_id
    traits: dict[str, object] = {}
    if txn.loyalty_card:
        properties["loyalty_card"] = txn.loyalty_card
        traits["loyaltyCard"] = txn.loyalty_card
    if txn.email:
        traits["email"] = txn.email.strip().lower()
    context: dict[str, object] = {"store": {"id": txn.store, "name": store.name}}
    if traits:
        context["traits"] = traits
    return Event(
        event_id=event_id(txn.store, txn.terminal, txn.receipt, txn.kind),
        type="track",
        channel="pos",
        site=store.site,
        timestamp=when,
        received_at=received_at,
        name=EVENT_NAMES[txn.kind],
        anonymous_id=anonymous_id(txn, email_hash),
        properties=properties,
        context=context,
    )


def _product(line: Line) -> dict[str, object]:
    product: dict[str, object] = {"quantity": line.quantity, "price": line.unit_price}
    for key in ("sku", "product_id", "name", "category"):
        value = getattr(line, key)
        if value is not None:
            product[key] = value
    if line.discount:
        product["discount"] = line.discount
    return product
