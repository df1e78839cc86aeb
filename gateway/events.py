"""The canonical Event and the parsing of inbound messages in the Segment shape.

Every contact on every channel becomes one :class:`Event`. Inbound messages use the Segment
spec's vocabulary (``messageId``, ``anonymousId``, ``userId``, ``event``, ``properties``...),
so existing analytics SDKs fit unchanged. Parsing is plain functions over bytes (no I/O): it
enforces the size limits, honours ``messageId`` as ``event_id``, corrects client clock skew with
``sentAt``, keeps unknown top-level fields under ``extra`` and names the field of any error.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from gateway.errors import EventError, TooLarge

MAX_EVENT_BYTES: Final = 32 * 1024
#: What msgspec's RecursionError (JSON nested ~1,000 deep) means to a sender.
TOO_DEEP: Final = "invalid JSON: nested too deeply"
MAX_BATCH_BYTES: Final = 500 * 1024

EventType = Literal["track", "page", "screen", "identify", "alias", "group"]
Channel = Literal["web", "email", "pos", "kiosk", "mobile", "erp", "callcenter", "api"]
CHANNELS: Final = frozenset(get_args(Channel))
EVENT_TYPES: Final = frozenset(get_args(EventType))

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Props = dict[str, Any]


class Event(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One contact, on any channel. ``timestamp`` is when it happened (skew-corrected, UTC).

    Not tracked by the garbage collector (``gc=False``): an event holds JSON-like data only and
    never takes part in a reference cycle, and the agents hold tens of thousands at a time
    (every collection would walk them).
    """

    event_id: str
    type: EventType
    channel: Channel
    site: str
    timestamp: datetime
    received_at: datetime
    name: str | None = None
    anonymous_id: str | None = None
    user_id: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    traits: Props = {}
    properties: Props = {}
    context: Props = {}
    #: Top-level fields the sender added that the spec does not name, kept as sent.
    extra: Props = {}
    #: Set by the collector agents: the visit this event belongs to, and the one customer the
    #: identity graph resolved its identifiers to (None for bots and anonymous-only traffic).
    session_id: str | None = None
    customer_id: str | None = None


class Message(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """An inbound message in the Segment shape (what SDKs send)."""

    type: EventType | None = None
    message_id: Id | None = None
    anonymous_id: Id | None = None
    user_id: Id | None = None
    previous_id: Id | None = None
    group_id: Id | None = None
    event: Name | None = None
    name: Name | None = None
    category: Name | None = None
    properties: Props = {}
    traits: Props = {}
    context: Props = {}
    integrations: Props = {}
    timestamp: datetime | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    channel: str | None = None
    write_key: str | None = None
    version: int | str | None = None


_KNOWN_FIELDS: Final = frozenset(f.encode_name for f in msgspec.structs.fields(Message))


class _Envelope(msgspec.Struct, rename="camel"):
    batch: list[msgspec.Raw] | None = None
    sent_at: datetime | None = None
    context: Props = {}


class _WriteKey(msgspec.Struct, rename="camel"):
    write_key: str | None = None


class Rejected(msgspec.Struct):
    """One refused item of a batch: its index, the reason and the field at fault."""

    index: int
    error: str
    field: str | None = None


_decoder: Final = msgspec.json.Decoder(Message)
_dict_decoder: Final = msgspec.json.Decoder(dict[str, Any])
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_write_key_decoder: Final = msgspec.json.Decoder(_WriteKey)


def write_key_of(body: bytes) -> str | None:
    """The ``writeKey`` a body carries (browsers cannot always send an Authorization header)."""
    try:
        return _write_key_decoder.decode(body).write_key
    except (msgspec.MsgspecError, RecursionError):
        return None


def parse_body(
    body: bytes,
    *,
    site: str,
    channel: Channel,
    received_at: datetime | None = None,
    default_type: EventType | None = None,
    anonymous_ok: bool = False,
) -> tuple[list[Event], list[Rejected]]:
    """Parse one message or a ``{"batch": [...]}``; valid items are kept, invalid ones listed.

    Raises :class:`EventError` only when the body as a whole is unusable (not JSON, too large,
    a single message that is invalid). ``anonymous_ok`` accepts messages without userId or
    anonymousId (a browser that asked not to be tracked).
    """
    if len(body) > MAX_BATCH_BYTES:
        raise TooLarge(f"body is {len(body)} bytes; the limit is {MAX_BATCH_BYTES}")
    received_at = received_at or datetime.now(UTC)
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _event_error(exc) from None
    except RecursionError:
        raise EventError(TOO_DEEP) from None
    if envelope.batch is None:
        event = parse_message(
            body,
            site=site,
            channel=channel,
            received_at=received_at,
            default_type=default_type,
            anonymous_ok=anonymous_ok,
        )
        return [event], []
    events: list[Event] = []
    indexes: list[int] = []
    rejected: list[Rejected] = []
    for index, raw in enumerate(envelope.batch):
        try:
            events.append(
                parse_message(
                    raw,
                    site=site,
                    channel=channel,
                    received_at=received_at,
                    default_type=default_type,
                    sent_at=envelope.sent_at,
                    context=envelope.context,
                    anonymous_ok=anonymous_ok,
                    check=False,
                )
            )
            indexes.append(index)
        except EventError as exc:
            rejected.append(Rejected(index, exc.reason, exc.field))
    try:
        _encoder.encode(events)  # what the bus will carry (~0.2 µs an event)
    except OverflowError:
        kept = []
        for index, event in zip(indexes, events, strict=True):
            try:
                kept.append(carried(event))
            except EventError as exc:
                rejected.append(Rejected(index, exc.reason, exc.field))
        events, rejected = kept, sorted(rejected, key=lambda r: r.index)
    return events, rejected


def parse_message(
    raw: bytes | msgspec.Raw,
    *,
    site: str,
    channel: Channel,
    received_at: datetime,
    default_type: EventType | None = None,
    sent_at: datetime | None = None,
    context: Props | None = None,
    anonymous_ok: bool = False,
    check: bool = True,
) -> Event:
    """Validate one Segment-shaped message and turn it into an Event; with ``check``, one the
    bus can carry (:func:`carried`; :func:`parse_body` checks a batch's at once)."""
    size = len(raw)
    if size > MAX_EVENT_BYTES:
        raise TooLarge(f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")
    extra: Props = {}
    try:
        message = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        if "unknown field" not in str(exc):
            raise _event_error(exc) from None
        # Slow path: keep the fields we do not know under `extra` instead of dropping them.
        fields = _dict_decoder.decode(raw)
        extra = {k: fields.pop(k) for k in [k for k in fields if k not in _KNOWN_FIELDS]}
        try:
            message = msgspec.convert(fields, Message)
        except msgspec.ValidationError as exc2:
            raise _event_error(exc2) from None
    except msgspec.DecodeError as exc:
        raise _event_error(exc) from None
    except RecursionError:
        raise EventError(TOO_DEEP) from None
    event = to_event(
        message,
        site=site,
        channel=channel,
        received_at=received_at,
        default_type=default_type,
        sent_at=sent_at,
        context=context,
        extra=extra,
        anonymous_ok=anonymous_ok,
    )
    return carried(event) if check else event


#: Integers msgpack (the bus) carries; JSON's have no bound.
INT_RANGE: Final = range(-(2**63), 2**64)
OUT_OF_RANGE: Final = "is an integer out of range (-2^63 to 2^64 - 1)"


def carried(event: Event) -> Event:
    """``event``, once it is known the bus can carry it (packing one costs ~0.35 µs); else an
    EventError naming the integer msgpack cannot hold."""
    try:
        _encoder.encode(event)
    except OverflowError:
        free = {"properties": event.properties, "traits": event.traits,
                "context": event.context, **event.extra}  # fmt: skip
        for name, value in free.items():
            if (where := _outside(value, name)) is not None:
                raise EventError(OUT_OF_RANGE, where) from None
        raise EventError(OUT_OF_RANGE) from None
    return event


def _outside(value: Any, path: str) -> str | None:
    """The path of the first integer in ``value`` outside :data:`INT_RANGE`, or None."""
    if isinstance(value, int):
        return None if value in INT_RANGE else path
    if isinstance(value, dict):
        for key, item in value.items():
            if (where := _outside(item, f"{path}.{key}")) is not None:
                return where
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (where := _outside(item, f"{path}[{index}]")) is not None:
                return where
    return None


def to_event(
    message: Message,
    *,
    site: str,
    channel: Channel,
    received_at: datetime,
    default_type: EventType | None = None,
    sent_at: datetime | None = None,
    context: Props | None = None,
    extra: Props | None = None,
    anonymous_ok: bool = False,
) -> Event:
    type_ = default_type or message.type
    if type_ is None:
        raise EventError("is required (one of: " + ", ".join(sorted(EVENT_TYPES)) + ")", "type")
    if message.type is not None and message.type != type_:
        raise EventError(f"must be {type_!r} on this endpoint", "type")
    _check_required(type_, message, anonymous_ok or message.context.get("dnt") is True)
    extra = dict(extra or {})
    if message.channel is not None:
        if message.channel in CHANNELS:
            channel = message.channel  # type: ignore[assignment]
        else:
            extra["channel"] = message.channel  # Segment's "server"/"browser" and the like
    ctx = {**context, **message.context} if context else message.context
    if message.integrations:
        extra["integrations"] = message.integrations
    properties = message.properties
    if message.category is not None:
        properties = {**properties, "category": message.category}
    return Event(
        event_id=message.message_id or uuid.uuid4().hex,
        type=type_,
        channel=channel,
        site=site,
        timestamp=event_time(message, received_at, sent_at),
        received_at=received_at,
        name=message.event if type_ == "track" else message.name,
        anonymous_id=message.anonymous_id,
        user_id=message.user_id,
        previous_id=message.previous_id,
        group_id=message.group_id,
        traits=message.traits,
        properties=properties,
        context=ctx,
        extra=extra,
    )


#: When events can have happened: from 2000 to a day after they were received. The filter
#: drops others from the bus; ingest refuses them first (with a resend id deduplicated, a
#: dropped event could not be sent again with the right time).
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD: Final = timedelta(days=1)


def possible(when: datetime, received_at: datetime) -> bool:
    """Whether an event received at ``received_at`` can have happened at ``when`` (UTC)."""
    return EARLIEST <= when <= received_at + AHEAD


def checked_time(when: datetime, received_at: datetime, field: str = "timestamp") -> datetime:
    """``when`` in UTC if it is a time events can have; EventError naming ``field`` if not.
    Without an offset, ``when`` is UTC."""
    try:
        utc = as_utc(when).astimezone(UTC)
    except (OverflowError, ValueError):  # year 1 ahead of UTC, or 9999 behind it
        utc = None
    if utc is None or not possible(utc, received_at):
        raise EventError("must be from 2000 on and at most a day ahead of now", field)
    return utc


def event_time(message: Message, received_at: datetime, sent_at: datetime | None) -> datetime:
    """When the event happened, on the server's clock.

    As Segment does: ``timestamp = receivedAt - (sentAt - originalTimestamp)`` when the client
    says when it sent the message, so a device whose clock is off still lands at the right time.
    """
    happened = message.timestamp or message.original_timestamp
    sent = message.sent_at or sent_at
    if happened is None:
        return received_at
    if sent is None:
        return checked_time(happened, received_at)
    try:
        return checked_time(received_at - (as_utc(sent) - as_utc(happened)), received_at)
    except OverflowError:  # years apart: no clock is that wrong
        raise EventError("is too far from sentAt", "timestamp") from None


def as_utc(when: datetime) -> datetime:
    """``when`` with UTC as its zone when it has none (a time sent without an offset)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _check_required(type_: EventType, message: Message, anonymous_ok: bool) -> None:
    if message.user_id is None and message.anonymous_id is None and not anonymous_ok:
        raise EventError("userId or anonymousId is required", "userId")
    if type_ == "track" and message.event is None:
        raise EventError("is required for track", "event")
    if type_ == "alias" and message.previous_id is None:
        raise EventError("is required for alias", "previousId")
    if type_ == "alias" and message.user_id is None:
        raise EventError("is required for alias", "userId")
    if type_ == "group" and message.group_id is None:
        raise EventError("is required for group", "groupId")


def _event_error(exc: msgspec.MsgspecError) -> EventError:
    """``Expected `str`, got `int` - at `$.userId``` → EventError(field="userId")."""
    reason, _, at = str(exc).partition(" - at ")
    field = at.strip("`").removeprefix("$").removeprefix(".") or None
    if reason.startswith("Object missing required field"):
        missing = reason.split("`")[1]
        field, reason = (f"{field}.{missing}" if field else missing), "is required"
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        reason = f"invalid JSON: {reason}"
    return EventError(reason.replace("`", ""), field)


# --- packing events into bus entries ---------------------------------------------------------

_encoder: Final = msgspec.msgpack.Encoder()
_events_decoder: Final = msgspec.msgpack.Decoder(list[Event])


def pack(events: Sequence[Event]) -> bytes:
    """Many events → one bus entry value (msgpack)."""
    return _encoder.encode(events)


def unpack(value: bytes) -> list[Event]:
    return _events_decoder.decode(value)
