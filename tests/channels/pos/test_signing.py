"""The signing scheme without sockets, including the README's worked example."""

from __future__ import annotations

import re

import pytest

from channels.pos.signing import Refused, Till, sign, string_to_sign, verify
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
TILLS = {"till-1": Till("store-1", "till-1", (b"old", b"new"))}


def test_the_readme_example_is_right() -> None:
    section = README.split("### Signing a request", 1)[1]
    body = re.search(r"and the body\n`([^`]+)`", section)
    signature = re.search(r"the signature is `([0-9a-f]{64})`", section)
    block = re.search(r"```\n(POST\n.*?)\n```", section, re.S)
    assert body and signature and block
    message = string_to_sign(
        "POST", "/v1/pos/transactions", "1772442900", "9f1c2a7e4b6d8e0f", body[1].encode()
    )
    assert message.decode() == block[1]
    signed = sign(b"demo-till-key", "POST", "/v1/pos/transactions", "1772442900",
                  "9f1c2a7e4b6d8e0f", body[1].encode())  # fmt: skip
    assert signed == signature[1]


def headers(
    key: bytes, ts: str = "1000", nonce: str = "n-1", body: bytes = b"{}"
) -> dict[str, str]:
    return {
        "X-Touchpoint-Terminal": "till-1",
        "X-Touchpoint-Timestamp": ts,
        "X-Touchpoint-Nonce": nonce,
        "X-Touchpoint-Signature": sign(key, "POST", "/p", ts, nonce, body),
    }


@pytest.mark.parametrize("key", [b"old", b"new"])
def test_any_key_of_the_till_signs(key: bytes) -> None:
    till, nonce = verify(TILLS, headers(key), "POST", "/p", b"{}", now=1000, window=300)
    assert (till.terminal, nonce) == ("till-1", "n-1")


@pytest.mark.parametrize(
    ("given", "method", "path", "now", "reason"),
    [
        (headers(b"other"), "POST", "/p", 1000, "bad signature"),
        (headers(b"old"), "POST", "/q", 1000, "bad signature"),
        (headers(b"old"), "PUT", "/p", 1000, "bad signature"),
        (headers(b"old"), "POST", "/p", 1301, "away from"),
        (headers(b"old", ts="-5"), "POST", "/p", 1000, "unix seconds"),
        (headers(b"old", nonce="x" * 65), "POST", "/p", 1000, "1-64"),
        ({**headers(b"old"), "X-Touchpoint-Signature": ""}, "POST", "/p", 1000, "missing"),
        ({**headers(b"old"), "X-Touchpoint-Terminal": "t"}, "POST", "/p", 1000, "unknown"),
        ({**headers(b"old"), "X-Touchpoint-Signature": "é"}, "POST", "/p", 1000, "bad signature"),
    ],
)
def test_refusals_say_why(
    given: dict[str, str], method: str, path: str, now: float, reason: str
) -> None:
    with pytest.raises(Refused, match=reason):
        verify(TILLS, given, method, path, b"{}", now=now, window=300)
