"""Personal data in the warehouse: emails and phone numbers only as keyed hashes.

A hash is HMAC-SHA256 (hex) of the normalized value under ``warehouse.pii_key``, so the same
address always maps to the same hash (joins and de-duplication keep working) while nobody
without the key can test a guessed address against the warehouse. Plain functions, no I/O
except :func:`pii_key`, which reads (or makes once) the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, Final

from gateway.config import Config
from gateway.errors import WarehouseError
from gateway.keyfile import local_key

#: Trait keys that hold an email address or a phone number (compared lowercased, ``_`` and
#: ``-`` ignored): never stored as such, only hashed.
EMAIL_KEYS: Final = frozenset({"email", "emailaddress", "mail"})
PHONE_KEYS: Final = frozenset({"phone", "phonenumber", "mobile", "mobilephone", "tel"})

_NOT_DIGITS = re.compile(r"\D+")


def pii_key(config: Config) -> bytes:
    """``warehouse.pii_key``, else a random key made once in ``<data.dir>/pii-key`` (0600)."""
    if config.warehouse.pii_key.is_set:
        return config.warehouse.pii_key.get().encode()
    path = config.data_dir / "pii-key"
    try:
        return local_key(path)
    except OSError as exc:
        raise WarehouseError(f"{path}: cannot make or read the PII key: {exc}") from exc


def normalize_email(email: str) -> str:
    """Trimmed and lowercased: ``" Ann@Example.COM "`` → ``"ann@example.com"``."""
    return email.strip().lower()


def normalize_phone(phone: str) -> str:
    """Digits only, keeping a leading ``+``: ``"+33 6 12-34"`` → ``"+3361234"``."""
    phone = phone.strip()
    digits = _NOT_DIGITS.sub("", phone)
    return f"+{digits}" if phone.startswith("+") and digits else digits


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of ``value`` under ``key``, as 64 hex digits."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def email_hash(key: bytes, email: str | None) -> str | None:
    """The hash of a normalized email address; ``None`` for no (or a blank) address."""
    normalized = normalize_email(email) if email else ""
    return keyed_hash(key, normalized) if normalized else None


def phone_hash(key: bytes, phone: str | None) -> str | None:
    """The hash of a normalized phone number; ``None`` for one without digits."""
    normalized = normalize_phone(phone) if phone else ""
    return keyed_hash(key, normalized) if normalized.lstrip("+") else None


def _kind(name: str) -> str | None:
    folded = name.lower().replace("_", "").replace("-", "")
    if folded in EMAIL_KEYS:
        return "email"
    if folded in PHONE_KEYS:
        return "phone"
    return None


def split_traits(
    key: bytes, traits: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None, str | None]:
    """``traits`` without emails and phone numbers, plus the hashes of the first of each:
    what a ``dim_customer`` row may hold (``traits``, ``email_hash``, ``phone_hash``)."""
    kept: dict[str, Any] = {}
    email: str | None = None
    phone: str | None = None
    for name, value in traits.items():
        kind = _kind(name)
        if kind is None:
            kept[name] = value
        elif kind == "email" and email is None and isinstance(value, str):
            email = email_hash(key, value)
        elif kind == "phone" and phone is None and isinstance(value, str | int):
            phone = phone_hash(key, str(value))
    return kept, email, phone
