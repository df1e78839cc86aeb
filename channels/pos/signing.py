"""How a till signs a request, and how the gateway checks it. Plain functions, no I/O.

The signature is the lowercase hex HMAC-SHA256, under one of the till's keys, of::

    METHOD \\n PATH \\n TIMESTAMP \\n NONCE \\n lowercase hex SHA-256 of the body

sent with ``X-Touchpoint-Terminal`` (terminal id), ``X-Touchpoint-Timestamp`` (unix seconds),
``X-Touchpoint-Nonce`` (random, at most 64 characters) and ``X-Touchpoint-Signature``. The body
is hashed as JSON/NDJSON bytes, before any ``Content-Encoding: gzip``. Whether the nonce was
used before is the caller's business (it needs Redis).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.config import Config

TERMINAL: Final = "X-Touchpoint-Terminal"
TIMESTAMP: Final = "X-Touchpoint-Timestamp"
NONCE: Final = "X-Touchpoint-Nonce"
SIGNATURE: Final = "X-Touchpoint-Signature"
NONCE_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.~+/=-]{1,64}$")
TIMESTAMP_PATTERN: Final = re.compile(r"^[0-9]{1,12}$")


class Refused(Exception):
    """A request that does not authenticate; the message says why (safe to show the till)."""


@dataclass(frozen=True)
class Till:
    store: str
    terminal: str
    keys: tuple[bytes, ...]


def tills(config: Config) -> dict[str, Till]:
    """Terminal id → its store and its set keys (unset keys are left out)."""
    return {
        terminal: Till(store, terminal, tuple(k.get().encode() for k in t.keys if k.is_set))
        for store, s in config.stores.items()
        for terminal, t in s.terminals.items()
    }


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{digest}".encode()


def sign(key: bytes, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """What a till sends as ``X-Touchpoint-Signature``."""
    message = string_to_sign(method, path, timestamp, nonce, body)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(
    known: Mapping[str, Till],
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    *,
    now: float,
    window: float,
) -> tuple[Till, str]:
    """The till that signed the request and its nonce; Refused otherwise.

    Every key of the till is tried in full (``hmac.compare_digest``), so the answer takes as
    long whichever key matched, or none.
    """
    terminal = headers.get(TERMINAL, "")
    timestamp = headers.get(TIMESTAMP, "")
    nonce = headers.get(NONCE, "")
    signature = headers.get(SIGNATURE, "")
    if not (terminal and timestamp and nonce and signature):
        missing = [h for h in (TERMINAL, TIMESTAMP, NONCE, SIGNATURE) if not headers.get(h)]
        raise Refused(f"missing header(s): {', '.join(missing)}")
    till = known.get(terminal)
    if till is None or not till.keys:
        raise Refused(f"unknown terminal {terminal[:64]!r} (or it has no key)")
    if not TIMESTAMP_PATTERN.match(timestamp):
        raise Refused(f"{TIMESTAMP} must be unix seconds")
    if abs(now - int(timestamp)) > window:
        raise Refused(f"{TIMESTAMP} is more than {window:g} s away from the gateway's clock")
    if not NONCE_PATTERN.match(nonce):
        raise Refused(f"{NONCE} must be 1-64 characters of [A-Za-z0-9_.~+/=-]")
    if not matches(till.keys, signature, method, path, timestamp, nonce, body):
        raise Refused("bad signature")
    return till, nonce


def matches(
    keys: Sequence[bytes],
    signature: str,
    method: str,
    path: str,
    timestamp: str,
    nonce: str,
    body: bytes,
) -> bool:
    message = string_to_sign(method, path, timestamp, nonce, body)
    given = signature.encode("ascii", "replace")
    ok = False
    for key in keys:
        expected = hmac.new(key, message, hashlib.sha256).hexdigest().encode()
        ok |= hmac.compare_digest(expected, given)
    return ok
