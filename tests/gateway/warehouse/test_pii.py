"""Emails and phone numbers reach the warehouse only as keyed hashes."""

from __future__ import annotations

import hashlib
import hmac
import stat
from collections.abc import Callable

import pytest

from gateway.config import Config
from gateway.errors import WarehouseError
from gateway.warehouse import Warehouse
from gateway.warehouse.pii import (
    email_hash,
    normalize_email,
    normalize_phone,
    phone_hash,
    pii_key,
    split_traits,
)

KEY = b"k" * 32


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [(" Ann@Example.COM ", "ann@example.com"), ("bob@x.org", "bob@x.org"), ("  ", "")],
)
def test_emails_are_trimmed_and_lowercased(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("+33 6 12-34-56-78", "+33612345678"),
        ("(555) 010-9999", "5550109999"),
        (" +1.555.0100 ", "+15550100"),
        ("06 12 34", "061234"),
        ("call me", ""),
    ],
)
def test_phone_numbers_keep_digits_and_a_leading_plus(raw: str, normalized: str) -> None:
    assert normalize_phone(raw) == normalized


def test_hashes_are_hmac_sha256_of_the_normalized_value() -> None:
    expected = hmac.new(KEY, b"ann@example.com", hashlib.sha256).hexdigest()
    assert email_hash(KEY, " ANN@example.com") == expected
    assert email_hash(KEY, "ann@example.com") == expected
    assert email_hash(b"another key", "ann@example.com") != expected
    assert phone_hash(KEY, "+33 6 12") == phone_hash(KEY, "+33612")
    assert phone_hash(KEY, "+33 6 12") != phone_hash(KEY, "33612")
    assert email_hash(KEY, None) is None and email_hash(KEY, " ") is None
    assert phone_hash(KEY, "n/a") is None and phone_hash(KEY, "+") is None


def test_traits_lose_contact_details_and_keep_the_rest() -> None:
    traits = {"Email": "Ann@x.org", "phone_number": "+33 6", "plan": "gold", "name": "Ann"}
    kept, email, phone = split_traits(KEY, traits)
    assert kept == {"plan": "gold", "name": "Ann"}
    assert email == email_hash(KEY, "ann@x.org")
    assert phone == phone_hash(KEY, "+336")
    assert "Ann@x.org" not in repr(kept) and "+33" not in repr(kept)


def test_the_key_is_the_setting_when_set(make_config: Callable[..., Config]) -> None:
    config = make_config("", "tp", '[warehouse]\npii_key = { env = "PII" }')
    assert not config.warehouse.pii_key.is_set
    config = make_config("", "tp", '[warehouse]\npii_key = "s3cret-key"')
    assert pii_key(config) == b"s3cret-key"
    assert not (config.data_dir / "pii-key").exists()


def test_without_a_setting_a_key_is_made_once_and_kept(make_config: Callable[..., Config]) -> None:
    config = make_config()
    first = pii_key(config)
    path = config.data_dir / "pii-key"
    assert len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pii_key(config) == first  # every later run hashes alike
    assert list(path.parent.glob(".pii-key-*")) == []


def test_an_empty_key_file_is_refused_not_used(make_config: Callable[..., Config]) -> None:
    config = make_config()
    path = config.data_dir / "pii-key"
    path.parent.mkdir(parents=True)
    path.write_text("\n")
    with pytest.raises(WarehouseError, match="pii-key is empty; remove it"):
        pii_key(config)


def test_an_unwritable_data_dir_is_a_clear_error(make_config: Callable[..., Config]) -> None:
    config = make_config()
    config.data_dir.parent.mkdir(parents=True, exist_ok=True)
    config.data_dir.write_text("a file where the data dir should be")
    with pytest.raises(WarehouseError, match="pii-key"):
        pii_key(config)


async def test_dim_customer_holds_hashes_not_addresses(warehouse: Warehouse) -> None:
    traits = {"email": "Ann@Example.com", "phone": "+33 6 12", "plan": "gold"}
    kept, email, phone = split_traits(KEY, traits)
    row = {"customer_id": "c1", "email_hash": email, "phone_hash": phone, "traits": kept}
    await warehouse.upsert("dim_customer", [row])
    [stored] = await warehouse.fetch("SELECT * FROM dim_customer")
    assert stored["traits"] == {"plan": "gold"}
    assert stored["email_hash"] == email_hash(KEY, "ann@example.com")
    assert "ann@" not in repr(stored).lower() and "+33" not in repr(stored)
