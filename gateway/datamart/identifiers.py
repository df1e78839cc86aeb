"""Who an event names: its identifiers, normalized, in priority order. Plain functions, no I/O.

Kinds, strongest first (when an event's identifiers point at different customers and nothing
merges them, the strongest decides): ``user_id`` and ``erp_party_id`` (the shop's own keys; a
customer holds at most one of each), ``loyalty_card``, ``email``, ``device_token`` and
``anonymous_id``. An alias's ``previous_id`` is looked up as a user id, else an anonymous id.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Final, Literal, get_args

from gateway.datamart.commerce import text
from gateway.events import Event

Kind = Literal["user_id", "erp_party_id", "loyalty_card", "email", "device_token", "anonymous_id"]
#: Priority order.
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
#: The shop's own keys: one per customer; two customers holding different ones never merge.
UNIQUE: Final = frozenset({"user_id", "erp_party_id"})
#: The pseudo-kind of an alias's previousId (resolved by the identity script).
PREVIOUS: Final = "previous"
MAX_LENGTH: Final = 255


def normalize(kind: str, value: Any) -> str | None:
    """The identifier as stored: trimmed text (e-mails lower-cased); None if unusable."""
    result = text(value)
    if result is None or len(result) > MAX_LENGTH:
        return None
    if kind == "email":
        result = result.lower()
        if "@" not in result:
            return None
    return result


def identifiers_of(event: Event) -> list[tuple[str, str]]:
    """``[(kind, value)]`` the event carries, strongest first, without repeats."""
    traits, context, props = event.traits, event.context, event.properties
    context_traits = context.get("traits")
    if not isinstance(context_traits, dict):
        context_traits = None
    device = context.get("device")
    candidates: list[tuple[str, Any]] = []
    if event.user_id is not None:
        candidates.append(("user_id", event.user_id))
    if traits or context_traits:
        sources = [t for t in (traits, context_traits) if t]
        for kind, name in _TRAITS:
            candidates += [(kind, value) for t in sources if (value := t.get(name)) is not None]
            if kind == "loyalty_card" and (card := props.get("loyalty_card")) is not None:
                candidates.append((kind, card))
    elif (card := props.get("loyalty_card")) is not None:
        candidates.append(("loyalty_card", card))
    if isinstance(device, dict) and (token := device.get("token")) is not None:
        candidates.append(("device_token", token))
    if event.anonymous_id is not None:
        candidates.append(("anonymous_id", event.anonymous_id))
    found: list[tuple[str, str]] = []
    for kind, value in candidates:
        normal = normalize(kind, value)
        if normal is not None and (kind, normal) not in found:
            found.append((kind, normal))
    previous = normalize(PREVIOUS, event.previous_id) if event.type == "alias" else None
    if previous and all(v != previous for k, v in found if k in ("user_id", "anonymous_id")):
        found.append((PREVIOUS, previous))
    return found


#: Identifiers carried in traits (``traits`` then ``context.traits``), in priority order; a
#: loyalty card may also be ``properties.loyalty_card`` (after both).
_TRAITS: Final = (
    ("erp_party_id", "erpPartyId"),
    ("loyalty_card", "loyaltyCard"),
    ("email", "email"),
)


@functools.lru_cache(maxsize=100_000)
def customer_id_for(site: str, kind: str, value: str) -> str:
    """The id a new customer gets from its first identifier: replays and members agree."""
    if kind == PREVIOUS:
        kind = "anonymous_id"
    digest = hashlib.blake2b(f"{site}:{kind}:{value}".encode(), digest_size=8)
    return "c_" + digest.hexdigest()
