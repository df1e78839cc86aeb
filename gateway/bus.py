"""The event bus on Redis Streams.

An entry holds a msgpack-packed list of events (one per request or micro-batch), so one XADD
carries many events and one ack covers them; sinks are idempotent on ``event_id`` and absorb a
replay. Consumers are members of consumer groups, ack explicitly after their side effect is
durable, and reclaim entries a crashed member left pending (``XAUTOCLAIM``). An entry delivered
``bus.max_deliveries`` times moves to the stream's dead-letter stream. Retention trimming
(``XTRIM MINID``) never passes an entry some group has not acknowledged.

Agents running in one process (``touchpoint serve``) pass each other the events they publish
(``publish_many(..., share=True)``): every entry still goes through Redis, but a local reader
group gets the decoded events along with the bytes instead of decoding them again, and a
producer waits for its local readers before it runs further ahead of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from gateway import keys as K
from gateway import pacing
from gateway.config import BusConfig
from gateway.errors import BusUnavailable
from gateway.events import Event, pack, unpack
from gateway.pacing import paced

log = logging.getLogger(__name__)

try:  # redis-py's hiredis parser, read directly by Bus.execute (a private module: optional)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - another redis-py layout: the per-reply path
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]

#: How far the lag of a group is counted when the server does not report it (Redis 6.2).
LAG_COUNT_CAP = 10_000
#: Events kept decoded per stream for the groups of this process that have not read them yet
#: (see :meth:`Bus.publish_many`); ~2 KB each.
SHARE_CAP = 25_000
#: Seconds a producer waits for local readers to take what is kept for them.
SHARE_WAIT = 1.0
#: Entries decoded between two looks at the clock (:mod:`gateway.pacing`): ~100 events each.
DECODE_STRIDE = 8
#: Entries per XREADGROUP at most (see :meth:`Bus.read`).
READ_PART = 100
#: Bytes of commands in one part of an :func:`execute` pipeline at most. A large batch's
#: pipeline runs for seconds in Redis (tens of MB: every visitor's session, every customer's
#: profile), longer than ``redis.timeout``; written a part at a time (one ahead of the replies
#: read), each wait lasts what a part or two take (tens of ms), and the round trip per part is
#: nothing beside its commands.
PART_BYTES = 1 << 20


#: Moves dead letters ``ARGV[3:]`` of ``KEYS[2]`` back onto stream ``KEYS[1]``, each for its
#: group (``ARGV[1]``: the entry field, ``ARGV[2]``: the group field).
REDRIVE = """
local out = {}
for i = 3, #ARGV do
  local rows = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
  if #rows > 0 then
    local fields, raw, group = rows[1][2], nil, nil
    for k = 1, #fields - 1, 2 do
      if fields[k] == ARGV[1] then raw = fields[k + 1] end
      if fields[k] == 'group' then group = fields[k + 1] end
    end
    if raw and raw ~= '' and group then
      local new = redis.call('XADD', KEYS[1], '*', ARGV[1], raw, ARGV[2], group)
      redis.call('XDEL', KEYS[2], ARGV[i])
      out[#out + 1] = {ARGV[i], new}
    end
  end
end
return out
"""


@dataclass(frozen=True)
class Entry:
    """One stream entry as a consumer sees it."""

    id: str
    events: list[Event]
    #: Times this entry was delivered to a consumer of the group (1 on first delivery).
    deliveries: int = 1
    raw: bytes = field(default=b"", repr=False)
    #: The one group an entry put back from the dead letters is for (:meth:`Bus.redrive`):
    #: the stream's other groups handled it before and acknowledge it unread.
    only_for: str | None = None
    #: Its value does not decode: the runtime dead-letters it, bytes kept, unhandled.
    broken: bool = False


@dataclass(frozen=True)
class DeadLetter:
    """An entry a group gave up on, as its dead-letter stream keeps it."""

    #: Its id in the dead-letter stream (what :meth:`Bus.redrive` takes).
    id: str
    #: Its id in its stream when it was given up on.
    entry_id: str
    group: str
    deliveries: int
    reason: str
    #: Events it holds (0 on a stream of records, or when it does not decode).
    events: int


@dataclass
class _Shared:
    """An entry this process published, decoded, for the local groups yet to read it."""

    raw: bytes
    events: list[Event]
    readers: set[str]


@dataclass(frozen=True)
class Claimed:
    """What a reclaim pass found: entries to process again, and entries to dead-letter."""

    retry: list[Entry]
    dead: list[Entry]


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    ms, seq = parse_id(entry_id)
    return f"{ms}-{seq + 1}"


class Bus:
    """Streams, consumer groups and their bookkeeping; every Redis error becomes BusUnavailable."""

    def __init__(self, client: aioredis.Redis, keys: K.Keys, settings: BusConfig) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        #: Groups of this process reading each stream (they joined by reading it).
        self._readers: dict[str, set[str]] = {}
        #: Per stream, entries published here that local groups have still to read.
        self._shared: dict[str, dict[str, _Shared]] = {}
        self._shared_events: dict[str, int] = {}
        self._freed: dict[str, asyncio.Event] = {}

    # --- producing ---------------------------------------------------------------------------

    async def publish(self, stream: str, events: Sequence[Event]) -> str:
        """One XADD: ``events`` travel as one entry."""
        try:
            entry_id = await self.client.xadd(
                self.keys.stream(stream), {K.ENTRY_FIELD: pack(events)}
            )
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"publish to {stream}: {exc}") from exc
        return _id(entry_id)

    async def publish_many(
        self,
        stream: str,
        batches: Sequence[Sequence[Event]],
        *,
        share: bool = False,
        packed: Sequence[bytes] | None = None,
    ) -> list[str]:
        """One entry per item of ``batches``, pipelined; entry order follows ``batches``.

        ``packed``: the entries' values when the caller has them already (``pack(batch)`` for
        each batch, e.g. an entry passed on unchanged).

        ``share``: the events are also kept, decoded, for the groups of this process that read
        ``stream`` (agents run together by ``touchpoint serve``), so they skip decoding what
        they would read back; the entry still goes through Redis, which stays the truth (a
        read uses the kept events only when the bytes it got are the ones published). The
        caller must not change the events afterwards. Bounded by :data:`SHARE_CAP` per stream.
        """
        if share and self._readers.get(stream):
            await self._room(stream, sum(map(len, batches)))
        if packed is None:
            packed = [pack(events) for events in batches]
        elif len(packed) != len(batches):
            raise ValueError("one packed value per batch")
        ids = await self.add_packed([(stream, value) for value in packed])
        readers = self._readers.get(stream)
        if share and readers:
            self._share(stream, ids, packed, batches, readers)
        return ids

    async def _room(self, stream: str, events: int) -> None:
        """Wait (up to :data:`SHARE_WAIT` s) until the local readers of ``stream`` took enough
        of what is kept for them to keep ``events`` more: a producer never runs further ahead
        of its readers in this process than that, so they never decode what it made (the
        producer's own entries wait unacknowledged meanwhile). Readers that stopped taking
        anything lose what is kept for them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHARE_WAIT
        while (kept := self._shared_events.get(stream, 0)) > 0 and kept + events > SHARE_CAP:
            left = deadline - loop.time()
            if left <= 0:
                self._forget(stream)
                return
            freed = self._freed.setdefault(stream, asyncio.Event())
            freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), left)

    def _share(
        self,
        stream: str,
        ids: list[str],
        packed: Sequence[bytes],
        batches: Sequence[Sequence[Event]],
        readers: set[str],
    ) -> None:
        shared = self._shared.setdefault(stream, {})
        count = self._shared_events.get(stream, 0)
        for entry_id, raw, events in zip(ids, packed, batches, strict=True):
            if count + len(events) > SHARE_CAP:
                break  # the readers are far behind: they decode what they reach next
            shared[entry_id] = _Shared(raw, list(events), set(readers))
            count += len(events)
        self._shared_events[stream] = count

    def _take_shared(
        self, stream: str, group: str, entry_id: str, raw: bytes
    ) -> list[Event] | None:
        """The events of an entry published here with ``share``, if ``group`` has yet to read
        them."""
        shared = self._shared.get(stream)
        kept = shared.get(entry_id) if shared else None
        if kept is None or group not in kept.readers or kept.raw != raw:
            return None
        kept.readers.discard(group)
        if not kept.readers:
            self._drop_shared(stream, entry_id)
        return list(kept.events)

    def _drop_shared(self, stream: str, entry_id: str) -> None:
        kept = self._shared[stream].pop(entry_id)
        self._shared_events[stream] -= len(kept.events)
        if (freed := self._freed.get(stream)) is not None:
            freed.set()

    def _forget(self, stream: str) -> None:
        """Drop what is kept for the readers of ``stream`` (they will decode it)."""
        self._shared.pop(stream, None)
        self._shared_events[stream] = 0

    def leave(self, stream: str, group: str) -> None:
        """``group`` stops reading ``stream`` in this process (an agent stopped)."""
        self._readers.get(stream, set()).discard(group)
        for entry_id, kept in list(self._shared.get(stream, {}).items()):
            kept.readers.discard(group)
            if not kept.readers:
                self._drop_shared(stream, entry_id)

    async def add_packed(self, items: Sequence[tuple[str, bytes]]) -> list[str]:
        """Pipelined XADD of already packed entries ``(stream, value)``, in order."""
        replies = await self.execute([_xadd(self.keys.stream(s), value) for s, value in items])
        return [_id(i) for i in replies]

    async def execute(self, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
        """:func:`execute` on this bus's client."""
        return await execute(self.client, commands)

    # --- consuming ---------------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` (and ``stream``) if missing; a new group starts at the beginning."""
        try:
            await self.client.xgroup_create(self.keys.stream(stream), group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise BusUnavailable(f"create group {group}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"create group {group}: {exc}") from exc

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: float, own: bool = False
    ) -> list[Entry]:
        """New entries for ``consumer``, waiting up to ``block`` seconds for some to arrive; with
        ``own``, those already delivered to it and not acknowledged (no wait).

        Read :data:`READ_PART` entries per call at most: the reply of one call must arrive
        within ``redis.timeout``, and 800 entries of 100 events are ~30 MB, read a chunk per
        turn of a busy loop. A failure after the first part loses nothing: what was delivered
        stays pending for ``consumer`` (the runtime reads its own entries again after one)."""
        entries: list[Entry] = []
        after = "0" if own else ">"
        while len(entries) < count:
            size = min(READ_PART, count - len(entries))
            # only the first part waits: the next are what had arrived meanwhile
            wait = None if own or entries else max(1, int(block * 1000))
            part = await self._read_part(stream, group, consumer, after, size, wait)
            entries += part
            if len(part) < size:
                break
            if own:
                after = part[-1].id
        return entries

    async def _read_part(
        self, stream: str, group: str, consumer: str, after: str, count: int, block: int | None
    ) -> list[Entry]:
        key = self.keys.stream(stream)
        try:
            reply: Any = await self.client.xreadgroup(
                group, consumer, {key: after}, count=count, block=block
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted under us: make it again
                await self.ensure_group(stream, group)
                return []
            raise BusUnavailable(f"read {stream}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"read {stream}: {exc}") from exc
        self._readers.setdefault(stream, set()).add(group)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3 shape
            rows = next(iter(reply.values()))[0] if reply else []
        else:
            rows = reply[0][1]
        if stream not in self._shared:
            decoded: list[Entry] = []
            # 100 entries: ~60 ms of decoding
            async for chunk in paced(rows, DECODE_STRIDE, "bus.read"):
                decoded += [_entry(stream, entry_id, fields) for entry_id, fields in chunk]
            return decoded
        entries = []
        for entry_id, fields in rows:
            raw = (fields or {}).get(K.ENTRY_FIELD, b"")
            events = self._take_shared(stream, group, _id(entry_id), raw) if raw else None
            if events is None:
                entries.append(_entry(stream, entry_id, fields))
            else:
                entries.append(Entry(_id(entry_id), events, raw=raw))
        return entries

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        try:
            await self.client.xack(self.keys.stream(stream), group, *ids)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"ack {stream}: {exc}") from exc

    async def claim_stale(
        self, stream: str, group: str, consumer: str, *, min_idle: float, count: int
    ) -> Claimed:
        """Take over entries other members left pending for ``min_idle`` seconds (XAUTOCLAIM).

        Entries already delivered ``max_deliveries`` times are handed back as dead instead.
        """
        key = self.keys.stream(stream)
        try:
            reply: Any = await self.client.xautoclaim(
                key,
                group,
                consumer,
                min_idle_time=int(min_idle * 1000),
                start_id="0-0",
                count=count,
            )
            rows = reply[1]
            deleted = [_id(i) for i in reply[2]] if len(reply) > 2 else []
            if deleted:  # trimmed while pending: nothing left to process
                await self.client.xack(key, group, *deleted)
            entries = [_entry(stream, entry_id, fields) for entry_id, fields in rows if fields]
            if not entries:
                return Claimed([], [])
            counts = await self._delivery_counts(key, group, consumer, entries)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"reclaim {stream}: {exc}") from exc
        retry: list[Entry] = []
        dead: list[Entry] = []
        for entry in entries:
            entry = dataclasses.replace(entry, deliveries=counts.get(entry.id, 1))
            is_dead = (
                entry.deliveries > self.settings.max_deliveries or entry.broken or not entry.raw
            )
            (dead if is_dead else retry).append(entry)
        return Claimed(retry, dead)

    async def _delivery_counts(
        self, key: str, group: str, consumer: str, entries: list[Entry]
    ) -> dict[str, int]:
        first, last = entries[0].id, entries[-1].id
        rows: Any = await self.client.xpending_range(
            key, group, min=first, max=last, count=len(entries) * 2 + 10, consumername=consumer
        )
        return {_id(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def dead_letter(
        self, stream: str, group: str, entries: Sequence[Entry], reason: str
    ) -> None:
        """Move ``entries`` to the dead-letter stream and ack them, atomically (one slot)."""
        if not entries:
            return
        key, dead = self.keys.stream(stream), self.keys.dead_letter(stream)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for entry in entries:
                    pipe.xadd(
                        dead,
                        {
                            K.ENTRY_FIELD: entry.raw,
                            b"id": entry.id,
                            b"group": group,
                            b"deliveries": entry.deliveries,
                            b"reason": reason[:500],
                        },
                    )
                pipe.xack(key, group, *[e.id for e in entries])
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"dead-letter {stream}: {exc}") from exc
        log.error(
            "dead-lettered %d entr(ies) of %s for %s: %s", len(entries), stream, group, reason
        )

    async def dead_letters(
        self, stream: str, count: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        """The oldest ``count`` entries of ``stream``'s dead letters (after the one with id
        ``after``, to page through)."""
        start = "-" if after is None else f"({after}"
        try:
            rows: Any = await self.client.xrange(
                self.keys.dead_letter(stream), min=start, count=count
            )
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"read the dead letters of {stream}: {exc}") from exc
        found = []
        for dead_id, fields in rows:
            entry = _entry(stream, fields.get(b"id", b""), fields)
            found.append(
                DeadLetter(
                    id=_id(dead_id),
                    entry_id=entry.id,
                    group=_id(fields.get(b"group", b"")),
                    deliveries=int(fields.get(b"deliveries", 0)),
                    reason=_id(fields.get(b"reason", b"")),
                    events=len(entry.events),
                )
            )
        return found

    async def redrive(self, stream: str, ids: Sequence[str]) -> list[tuple[str, str]]:
        """Put dead-lettered entries back on ``stream`` (those with ``ids`` in the dead-letter
        stream), each as a new entry for the group that gave up on it: that group handles it
        as it would any entry, the stream's other groups acknowledge it unread. Each moves
        atomically (its stream and dead letters share a slot), so two runs never put one back
        twice. ``(dead-letter id, new id)`` per entry moved; ids not there are skipped, and so
        are dead letters without a value."""
        moved: list[tuple[str, str]] = []
        keys = [self.keys.stream(stream), self.keys.dead_letter(stream)]
        try:
            for first in range(0, len(ids), 500):
                args: list[Any] = [K.ENTRY_FIELD, K.FOR_GROUP_FIELD, *ids[first : first + 500]]
                reply: Any = await self.client.eval(REDRIVE, 2, *keys, *args)
                moved += [(_id(old), _id(new)) for old, new in reply]
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"redrive {stream}: {exc}") from exc
        if moved:
            log.warning("put back %d dead-lettered entr(ies) of %s", len(moved), stream)
        return moved

    async def discard(self, stream: str, ids: Sequence[str]) -> list[str]:
        """Delete dead letters of ``stream`` for good (an operator looked at them and gave
        them up); the ids that were there and are gone."""
        dead = self.keys.dead_letter(stream)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for dead_id in ids:
                    pipe.xdel(dead, dead_id)
                deleted = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"discard dead letters of {stream}: {exc}") from exc
        gone = [dead_id for dead_id, n in zip(ids, deleted, strict=True) if int(n)]
        if gone:
            log.warning("discarded %d dead-lettered entr(ies) of %s", len(gone), stream)
        return gone

    async def discard_all(self, stream: str) -> int:
        """Delete every dead letter ``stream`` holds now (one dead-lettered meanwhile stays):
        how many."""
        dead = self.keys.dead_letter(stream)
        try:
            newest: Any = await self.client.xrevrange(dead, count=1)
            if not newest:
                return 0
            # MINID drops the ids below it: everything up to the newest one seen
            minid = next_id(_id(newest[0][0]))
            removed = int(await self.client.xtrim(dead, minid=minid, approximate=False))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"discard dead letters of {stream}: {exc}") from exc
        if removed:
            log.warning("discarded %d dead-lettered entr(ies) of %s", removed, stream)
        return removed

    async def latest(self, stream: str, count: int) -> list[Entry]:
        """The newest ``count`` entries, newest first (for people watching, not consumers)."""
        try:
            rows: Any = await self.client.xrevrange(self.keys.stream(stream), count=count)
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"read {stream}: {exc}") from exc
        return [_entry(stream, entry_id, fields) for entry_id, fields in rows]

    # --- upkeep and figures ------------------------------------------------------------------

    async def trim(self, stream: str, *, now: float | None = None) -> int:
        """Drop entries older than the retention that every group has acknowledged."""
        key = self.keys.stream(stream)
        cutoff_ms = int(((now or time.time()) - self.settings.retention) * 1000)
        minid = (cutoff_ms, 0)
        try:
            groups = await self.client.xinfo_groups(key)
            for group in groups:
                name = _id(group["name"])
                summary = await self.client.xpending(key, name)
                safe = next_id(_id(group["last-delivered-id"]))
                if summary["pending"]:
                    safe = min(safe, _id(summary["min"]), key=parse_id)
                minid = min(minid, parse_id(safe))
            removed = await self.client.xtrim(
                key, minid=f"{minid[0]}-{minid[1]}", approximate=False
            )
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0
            raise BusUnavailable(f"trim {stream}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"trim {stream}: {exc}") from exc
        return int(removed)

    async def stats(self) -> dict[str, Any]:
        """Every stream with its length, every group with its pending count and lag."""
        streams: dict[str, Any] = {}
        try:
            for name in K.STREAMS:
                key = self.keys.stream(name)
                length = await self.client.xlen(key)
                groups = (
                    await self.client.xinfo_groups(key)
                    if length or await self.client.exists(key)
                    else []
                )
                streams[name] = {
                    "key": key,
                    "length": int(length),
                    "dead_letter": int(await self.client.xlen(self.keys.dead_letter(name))),
                    "groups": {
                        _id(g["name"]): {
                            "pending": int(g["pending"]),
                            "lag": await self._lag(key, g),
                            "consumers": int(g["consumers"]),
                            "last_delivered_id": _id(g["last-delivered-id"]),
                        }
                        for g in groups
                    },
                }
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"stats: {exc}") from exc
        return {"streams": streams}

    async def _lag(self, key: str, group: dict[Any, Any]) -> int:
        """Entries not yet delivered to the group (Redis >= 7 says; 6.2 is counted, capped)."""
        lag = group.get("lag")
        if lag is not None:
            return int(lag)
        after = "(" + _id(group["last-delivered-id"])
        rows: Any = await self.client.xrange(key, min=after, max="+", count=LAG_COUNT_CAP)
        return len(rows)


async def execute(client: aioredis.Redis, commands: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` as one pipeline and return their raw replies, in order (RESP2: a hash
    or a sorted set with scores comes as a flat list).

    The commands are packed by hiredis (C) and sent on one pooled connection, in parts of
    about :data:`PART_BYTES` (or of what was packed within a :data:`~gateway.pacing.SLICE`);
    redis-py's asyncio pipeline packs in Python and costs ~2x per command. Each part is written
    before the replies of the one before are read (within the connection's timeout), so Redis
    runs a part while the next is packed — and made, when ``commands`` is a generator that
    makes them as they are taken (the profile step's deltas: bench/collector.py ``--steps``).
    An error reply fails the call (BusUnavailable) once its part is read; the part after it
    has been sent, the rest are not (a Redis that refuses writes is not usable, and every
    pipeline here may run again).
    """
    parts = _parts(commands)  # packed as they go: the waits between give the loop back
    part = next(parts, None)
    if part is None:
        return []
    pool = client.connection_pool
    try:
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    except (RedisError, OSError) as exc:
        raise BusUnavailable(f"Redis: {exc}") from exc
    replies: list[Any] = []
    try:
        await conn.send_packed_command(part, check_health=False)
        while part is not None:
            # the next part goes out before this one's replies are read: Redis runs one part
            # while the next is packed
            following = next(parts, None)
            if following is not None:
                await conn.send_packed_command(following, check_health=False)
            # One deadline for the part's replies: a timeout context per reply costs more
            # than reading the reply itself.
            async with asyncio.timeout(conn.socket_timeout):
                parser = getattr(conn, "_parser", None)
                if _AsyncHiredisParser is not None and isinstance(parser, _AsyncHiredisParser):
                    replies += await _read_replies(parser, len(part))
                else:
                    replies += [await conn.read_response(timeout=math.inf) for _ in part]
            part = following
    except BaseException as exc:
        await conn.disconnect()  # replies half read: the connection is out of step
        if isinstance(exc, RedisError | OSError | TimeoutError):
            reason = str(exc) or f"no reply within {conn.socket_timeout} s"
            raise BusUnavailable(f"Redis: {reason}") from exc
        raise
    finally:
        await pool.release(conn)
    return replies


def _parts(commands: Iterable[tuple[Any, ...]]) -> Iterator[list[bytes]]:
    """``commands`` packed, in runs of about :data:`PART_BYTES` (at least one command each),
    or of what was packed within a :data:`~gateway.pacing.SLICE` (``commands`` may be made as
    they are taken)."""
    part: list[bytes] = []
    size = 0
    since = time.perf_counter()
    for command in commands:
        packed = hiredis.pack_command(command)
        part.append(packed)
        size += len(packed)
        if size >= PART_BYTES or time.perf_counter() - since >= pacing.SLICE:
            yield part
            part, size = [], 0
            since = time.perf_counter()
    if part:
        yield part


async def _read_replies(parser: _AsyncHiredisParser, count: int) -> list[Any]:
    """``count`` replies straight from the hiredis reader (redis-py's per-reply path costs
    ~0.7 µs more a reply, in Python around it); an error reply is raised once all are read."""
    reader: Any = parser._reader
    push = getattr(hiredis, "PushNotification", None)  # RESP3 out-of-band: not a reply
    replies: list[Any] = []
    while True:
        while (reply := reader.gets()) is not NOT_ENOUGH_DATA:
            if push is not None and isinstance(reply, push):
                continue
            replies.append(reply)
            if len(replies) == count:
                for reply in replies:
                    if isinstance(reply, RedisError):
                        raise reply
                return replies
        await parser.read_from_socket()  # type: ignore[no-untyped-call]


def _xadd(key: str, value: bytes) -> tuple[Any, ...]:
    return (b"XADD", key, b"*", K.ENTRY_FIELD, value)


def _entry(stream: str, entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Entry:
    """An entry as read; events are decoded on the streams that carry them (others, such as
    ``sessions``, hold records their consumer decodes from ``raw``)."""
    fields = fields or {}
    raw = fields.get(K.ENTRY_FIELD, b"")
    only_for = _id(fields[K.FOR_GROUP_FIELD]) if K.FOR_GROUP_FIELD in fields else None
    if stream not in K.EVENT_STREAMS:
        return Entry(_id(entry_id), [], raw=raw, only_for=only_for)
    try:
        events = unpack(raw) if raw else []
    except msgspec.DecodeError:
        log.error("bus entry %s of %s does not hold packed events", _id(entry_id), stream)
        return Entry(_id(entry_id), [], raw=raw, only_for=only_for, broken=True)
    return Entry(_id(entry_id), events, raw=raw, only_for=only_for)
