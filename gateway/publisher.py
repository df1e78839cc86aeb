"""The ingest write path: group commit onto the bus, with optional ``messageId`` de-duplication.

Concurrent requests queue their events; one flusher task writes everything waiting as one
pipeline (one entry per request), then answers them all. A request is answered only once its
entry is in Redis, or with BusUnavailable within ``timeout``.

De-duplication (``dedup`` seconds > 0) runs check → write → mark: ids already seen are dropped,
the rest are written, and only then are they marked seen. A write that fails marks nothing, so
a client's retry is never mistaken for a duplicate of something that was not stored; a crash
between write and mark can let a duplicate through, which the idempotent sinks absorb.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from gateway.bus import Bus
from gateway.errors import BusUnavailable, EventError
from gateway.events import Event, pack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    #: The entry holding the events; None when every event was a duplicate.
    entry_id: str | None
    events: int
    duplicates: int


@dataclass
class _Request:
    stream: str
    events: list[Event]
    dedup: float
    future: asyncio.Future[Published]


class Publisher:
    """Group commit onto the bus; bounded in time (``timeout``) and in waiting requests."""

    def __init__(self, bus: Bus, *, timeout: float, max_pending: int = 10_000) -> None:
        self.bus = bus
        self.timeout = timeout
        self.max_pending = max_pending
        self.published_entries = 0
        self.published_events = 0
        self.duplicates = 0
        self.failures = 0
        self._pending: list[_Request] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="publisher")

    async def publish(
        self, stream: str, events: Sequence[Event], *, dedup: float = 0.0
    ) -> Published:
        """Return once ``events`` are one entry in Redis; BusUnavailable otherwise.

        With ``dedup`` > 0, events whose (site, event_id) was published in the last ``dedup``
        seconds are dropped (and counted as duplicates).
        """
        if self._closing:
            raise BusUnavailable("shutting down")
        if len(self._pending) >= self.max_pending:
            raise BusUnavailable("too many publishes waiting for Redis")
        future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(stream, list(events), dedup, future))
        self._wake.set()
        try:
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            raise BusUnavailable(f"Redis did not confirm within {self.timeout:g} s") from None

    async def _flush_forever(self) -> None:
        while not (self._closing and not self._pending):
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            try:
                await self._flush(batch)
            except Exception as exc:  # a bug: fail this batch, never the publishes after it
                log.exception("publisher: flush failed")
                self._fail(batch, BusUnavailable(f"publish failed: {exc!r}"))

    async def _flush(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.future.done()]  # timed out: not acknowledged
        if not batch:
            return
        try:
            dropped = await self._drop_seen(batch)
            writes, packed = [], []
            for request in batch:
                if request.events and (value := _packed(request)) is not None:
                    writes.append(request)
                    packed.append((request.stream, value))
            ids = await self.bus.add_packed(packed)
        except BusUnavailable as exc:
            self._fail(batch, exc)
            return
        entry_ids = dict(zip(map(id, writes), ids, strict=True))
        # a request refused by _packed has nothing written: not counted, not marked seen
        kept = [
            (r, d)
            for r, d in zip(batch, dropped, strict=True)
            if id(r) in entry_ids or not r.events
        ]
        batch = [r for r, _ in kept]
        for request, duplicates in kept:
            self.published_entries += bool(request.events)
            self.published_events += len(request.events)
            self.duplicates += duplicates
            if not request.future.done():
                entry_id = entry_ids.get(id(request))
                request.future.set_result(Published(entry_id, len(request.events), duplicates))
        await self._mark_seen(batch)

    def _fail(self, batch: list[_Request], exc: Exception) -> None:
        self.failures += len(batch)
        for request in batch:
            if not request.future.done():
                request.future.set_exception(exc)

    async def _drop_seen(self, batch: list[_Request]) -> list[int]:
        """Remove already seen events from each request (in place); return how many per request.

        Ids are kept in one set per site and time bucket of ``dedup`` seconds; the current and
        the previous bucket are checked, so an id is remembered for one to two windows. That
        is two commands per site and flush, however many events.
        """
        groups = self._by_bucket(batch)
        if not groups:
            return [0] * len(batch)
        keys = self.bus.keys
        commands = []
        for (site, window_ms, bucket), ids in groups.items():
            for b in (bucket, bucket - 1):
                commands.append((b"SMISMEMBER", keys.seen(site, window_ms, b), *ids))
        replies = await self.bus.execute(commands)
        seen: set[tuple[str, str]] = set()
        for i, ((site, _, _), ids) in enumerate(groups.items()):
            current, previous = replies[2 * i], replies[2 * i + 1]
            seen.update(
                (site, id_) for id_, a, b in zip(ids, current, previous, strict=True) if a or b
            )
        dropped = []
        for request in batch:
            if request.dedup <= 0:
                dropped.append(0)
                continue
            kept = []
            for event in request.events:
                key = (event.site, event.event_id)
                if key not in seen:
                    seen.add(key)  # a later copy in this flush is a duplicate too
                    kept.append(event)
            dropped.append(len(request.events) - len(kept))
            request.events = kept
        return dropped

    async def _mark_seen(self, batch: list[_Request]) -> None:
        groups = self._by_bucket(batch)
        commands: list[tuple[object, ...]] = []
        for (site, window_ms, bucket), ids in groups.items():
            key = self.bus.keys.seen(site, window_ms, bucket)
            commands += [(b"SADD", key, *ids), (b"PEXPIRE", key, 2 * window_ms)]
        try:
            await self.bus.execute(commands)
        except BusUnavailable as exc:  # written but not marked: a replay may pass, sinks absorb
            log.warning("publisher: could not mark ids as seen: %s", exc)

    @staticmethod
    def _by_bucket(batch: list[_Request]) -> dict[tuple[str, int, int], list[str]]:
        """Event ids to check or mark, by (site, window, current time bucket)."""
        now_ms = int(time.time() * 1000)
        groups: dict[tuple[str, int, int], list[str]] = {}
        for request in batch:
            if request.dedup <= 0:
                continue
            window_ms = int(request.dedup * 1000)
            for event in request.events:
                key = (event.site, window_ms, now_ms // window_ms)
                groups.setdefault(key, []).append(event.event_id)
        return groups

    async def close(self) -> None:
        """Finish the flush under way and what is still waiting, then stop (idempotent)."""
        if self._task is None:
            return
        task, self._task = self._task, None
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(task, self.timeout * 2)
        except TimeoutError:
            log.error("publisher: Redis did not take the last entries before shutdown")


def _packed(request: _Request) -> bytes | None:
    """The request's entry value; None, and the request answered, when its events cannot be
    packed (parsing refuses what msgpack cannot carry: this keeps one miss from failing the
    other requests of the flush)."""
    try:
        return pack(request.events)
    except (msgspec.EncodeError, OverflowError, TypeError, ValueError) as exc:
        request.future.set_exception(EventError(f"cannot be carried on the bus: {exc}"))
        return None
