"""``POST /v1/erp/notify`` (served by ``gateway.erp.web``): an ERP that can call out asks for
a sync now. This module holds the signature and the request, no HTTP.

The request is signed like a webhook: ``X-Touchpoint-Signature: t=<unix seconds>,v1=<hex>``
where ``hex`` is HMAC-SHA256 with ``erp.notify_key`` over ``<t>.<body>``. A timestamp more
than ``erp.notify_window`` seconds away is refused (a captured request cannot be replayed
later; one replayed inside the window only asks for a sync that was due anyway). The body is
``{"entities": ["stock"], "full": false}`` (no entities: all of them). The request becomes an
entry on the ``erp`` agent's stream, so it is kept until the agent (in this process or in
``touchpoint agent erp``) has run the sync; the answer is 202 with the entry id.

From a shell::

    body='{"entities":["stock"]}'; t=$(date +%s)
    sig=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$KEY" -r | cut -d' ' -f1)
    curl -X POST -H "X-Touchpoint-Signature: t=$t,v1=$sig" -d "$body" \\
        http://gateway:8080/v1/erp/notify
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

import msgspec

from gateway.erp.base import Entity

HEADER: Final = "X-Touchpoint-Signature"


class SyncRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What to sync: the entities (empty: all), from no cursor when ``full``."""

    entities: list[Entity] = []
    full: bool = False


def signature(key: str, timestamp: int, body: bytes) -> str:
    """The ``X-Touchpoint-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def check_signature(
    key: str, header: str | None, body: bytes, window: float, now: float | None = None
) -> str | None:
    """Why the signature is refused (None: it is good)."""
    if not header:
        return f"{HEADER} header required"
    parts = dict(p.strip().partition("=")[::2] for p in header.split(","))
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or not given:
        return f"{HEADER} must be t=<unix seconds>,v1=<hex HMAC-SHA256>"
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > window:
        return "signature timestamp outside the allowed window (check the ERP's clock)"
    expected = signature(key, int(stamp), body).partition(",v1=")[2]
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogateescape")):
        return "bad signature"
    return None


def decode_request(raw: bytes) -> SyncRequest:
    return msgspec.msgpack.decode(raw, type=SyncRequest)
