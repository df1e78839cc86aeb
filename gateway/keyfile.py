"""Local secrets made once: a random key kept in a file under ``data.dir`` (mode 0600).

Used where a setting may be left unset yet every run must agree on the value: the warehouse's
PII hashing key, the access-log importer's visitor salt.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def local_key(path: Path) -> bytes:
    """The key in ``path``, made (64 random hex digits) if the file does not exist yet.

    The draft is written aside and hard-linked into place, so a concurrent reader never sees
    it half written and two processes racing to make it agree on one. Raises ``OSError``
    (an empty file too).
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}-{os.getpid()}")
        draft.touch(mode=0o600)
        try:
            draft.write_text(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink()
    key = path.read_bytes().strip()
    if not key:  # truncated (a full disk?): hashing with an empty key would pass unnoticed
        raise OSError(f"{path} is empty; remove it to make a new key (hashes change with it)")
    return key
