"""What the POS tests share: a store config, signed requests, transactions."""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec

from channels.pos.signing import sign

KEY = "till-one-current-key"
NEXT_KEY = "till-one-next-key"
STORES = """
[stores.store-1]
site = "demo"
name = "High Street"
timezone = "Europe/Paris"

[stores.store-1.terminals.till-1]
keys = [{ env = "TOUCHPOINT_TILL1_KEY" }, { env = "TOUCHPOINT_TILL1_KEY_NEXT" }]

[stores.store-1.terminals.till-2]
keys = [{ env = "TOUCHPOINT_TILL2_KEY" }]
"""
ENV = {"till1_key": KEY, "till1_key_next": NEXT_KEY}


def txn(receipt: str = "R-1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "store": "store-1",
        "terminal": "till-1",
        "receipt": receipt,
        "time": "2026-03-02T10:15:00+01:00",
        "lines": [
            {"sku": "SKU-1", "quantity": 2, "unit_price": 10.0, "discount": 1.0},
            {"product_id": "P-9", "quantity": 1, "unit_price": 5.5},
        ],
        "total": 24.5,
        "tender": "card",
    }
    body.update(fields)
    return body


def encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def signed(
    body: bytes,
    path: str = "/v1/pos/transactions",
    *,
    method: str = "POST",
    key: str = KEY,
    terminal: str = "till-1",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)
    return {
        "X-Touchpoint-Terminal": terminal,
        "X-Touchpoint-Timestamp": ts,
        "X-Touchpoint-Nonce": nonce,
        "X-Touchpoint-Signature": sign(key.encode(), method, path, ts, nonce, body),
        "Content-Type": "application/json",
    }
