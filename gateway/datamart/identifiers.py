"""Who an event names: its identifiers, normalized, in priority order. Plain functions, no I/O.

Kinds, strongest first (when an event's identifiers point at different customers and nothing
merges them, the strongest decides): ``user_id`` and ``erp_party_id`` (the shop's own keys; a
customer holds at most one of each), ``loyalty_card``, ``email``, ``device_token`` and
``anonymous_id``. An alias's ``previous_id`` is looked up as a user id, else an anonymous id.
"""

from __future__ import annotations

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


def _traits(event: Event) -> list[dict[str, Any]]:
    found = [event.traits]
    context_traits = event.context.get("traits")
    if isinstance(context_traits, dict):
        found.append(context_traits)
    return found


def identifiers_of(event: Event) -> list[tuple[str, str]]:
    """``[(kind, value)]`` the event carries, strongest first, without repeats."""
    raw: dict[str, list[Any]] = {kind: [] for kind in KINDS}
    raw["user_id"].append(event.user_id)
    raw["anonymous_id"].append(event.anonymous_id)
    for traits in _traits(event):
        raw["email"].append(traits.get("email"))
        raw["loyalty_card"].append(traits.get("loyaltyCard"))
        raw["erp_party_id"].append(traits.get("erpPartyId"))
    raw["loyalty_card"].append(event.properties.get("loyalty_card"))
    device = event.context.get("device")
    if isinstance(device, dict):
        raw["device_token"].append(device.get("token"))
    found: list[tuple[str, str]] = []
    for kind in KINDS:
        for value in raw[kind]:
            normal = normalize(kind, value)
            if normal is not None and (kind, normal) not in found:
                found.append((kind, normal))
    previous = normalize(PREVIOUS, event.previous_id) if event.type == "alias" else None
    if previous and all(v != previous for k, v in found if k in ("user_id", "anonymous_id")):
        found.append((PREVIOUS, previous))
    return found


def customer_id_for(site: str, kind: str, value: str) -> str:
    """The id a new customer gets from its first identifier: replays and members agree."""
    if kind == PREVIOUS:
        kind = "anonymous_id"
    digest = hashlib.blake2b(f"{site}:{kind}:{value}".encode(), digest_size=8)
    return "c_" + digest.hexdigest()
