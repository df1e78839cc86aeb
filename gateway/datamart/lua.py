"""Lua scripts run by SHA inside :meth:`gateway.bus.Bus.execute` pipelines.

A pipeline that calls a script starts with its ``SCRIPT LOAD`` (idempotent, microseconds for
the server), so a restarted or flushed Redis never answers NOSCRIPT in the middle of a batch.
:func:`execute` tells a script that failed on its input (:class:`ScriptError`: the runtime
retries the entry alone, then dead-letters it) from Redis being away (BusUnavailable: the batch
waits and is retried whole).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.bus import Bus
from gateway.errors import BusUnavailable, ScriptError


class Script:
    """One Lua script: its source, its SHA1 and the commands that load and call it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def load(self) -> tuple[Any, ...]:
        """``SCRIPT LOAD`` (idempotent): put it first in a pipeline that calls the script."""
        return (b"SCRIPT", b"LOAD", self.source)

    def call(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """``EVALSHA`` with ``keys`` (all in one hash slot) and ``args``."""
        return (b"EVALSHA", self.sha, len(keys), *keys, *args)


def text(value: Any) -> str:
    """A Redis reply (bytes, str, number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(reply: Any) -> dict[str, str]:
    """HGETALL's reply → dict: ``[k1, v1, k2, v2...]`` (RESP2, a script's) or a map (RESP3)."""
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    return {text(reply[i]): text(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}


def scored(reply: Any) -> list[tuple[str, float]]:
    """ZRANGE ... WITHSCORES's reply → ``[(member, score)]``: ``[m1, s1, m2, s2...]`` (RESP2, a
    script's) or ``[[m1, s1], ...]`` (RESP3)."""
    if reply and isinstance(reply[0], list):
        return [(text(m), float(s)) for m, s in reply]
    return [(text(reply[i]), float(reply[i + 1])) for i in range(0, len(reply) - 1, 2)]


async def execute(bus: Bus, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
    """:meth:`Bus.execute`, with script failures raised as :class:`ScriptError`."""
    try:
        return await bus.execute(commands)
    except BusUnavailable as exc:
        if "user_script" in str(exc):
            raise ScriptError(str(exc)) from exc
        raise
