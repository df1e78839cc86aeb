"""The agent runtime: a named consumer-group member that feeds batches to a handler.

The loop reads a batch (``bus.batch`` entries, or a :class:`Batching` handler's own number),
calls the handler, and acks only after the handler returned (a handler that is
:class:`Overlapping` gets the next batches while earlier ones are still in hand, up to
its ``batches_in_flight``; each is acked when its own call returned). A failing
batch is retried entry by entry (so one poison entry cannot hold up the others); an entry that
keeps failing moves to the dead-letter stream after ``bus.max_deliveries`` attempts. Entries a
crashed member left pending are reclaimed every ``bus.claim_idle`` seconds. Errors back off
exponentially with jitter. :meth:`Agent.stop` lets the batches in hand finish, then the loop ends.
A handler that is also :class:`Ticking` has its ``tick()`` run between batches every
``tick_interval`` seconds (and once at start), for chores no entry triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.bus import Bus, Entry
from gateway.errors import BusUnavailable, WarehouseUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[Entry]], Awaitable[None]]

#: Handler errors that say a service is away, not that the entries are bad: the batch is kept
#: whole and retried after a backoff, without counting towards dead-lettering.
TRANSIENT = (
    BusUnavailable,
    WarehouseUnavailable,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


@runtime_checkable
class Ticking(Protocol):
    """A handler with periodic chores (closing idle sessions...), run between batches."""

    tick_interval: float

    async def tick(self) -> None: ...


@runtime_checkable
class Overlapping(Protocol):
    """A handler that takes a batch while its earlier ones are still in hand (it orders what
    must stay in order itself): the runtime calls it on up to ``batches_in_flight`` at once."""

    batches_in_flight: int


@runtime_checkable
class Batching(Protocol):
    """A handler that reads ``batch_entries`` entries at a time instead of ``bus.batch``."""

    batch_entries: int


@runtime_checkable
class Closing(Protocol):
    """A handler holding connections of its own (an ERP's), released when its agent stops."""

    async def close(self) -> None: ...


def consumer_name() -> str:
    """Unique per process start: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter: retry policy as data."""

    base: float = 0.05
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        # the exponent stops growing long after the cap is reached (a float overflows at 2**1024)
        return random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 64)))


@dataclass
class AgentStats:
    entries: int = 0
    events: int = 0
    acked: int = 0
    errors: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    last_error: str = ""
    last_error_at: float = 0.0
    last_batch_at: float = 0.0


class Agent:
    """One member of consumer group ``name`` on ``stream``."""

    def __init__(
        self,
        name: str,
        handler: Handler,
        bus: Bus,
        *,
        stream: str,
        consumer: str | None = None,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.name = name
        self.handler = handler
        self.bus = bus
        self.stream = stream
        self.consumer = consumer or consumer_name()
        self.backoff = backoff
        self.stats = AgentStats()
        self.running = False
        self._stop = asyncio.Event()
        self._retry: deque[list[Entry]] = deque()
        self._attempts: dict[str, int] = {}
        self._unacked: list[str] = []
        self._failures = 0
        self._next_claim = 0.0
        #: A call to Redis failed: a read may have failed after Redis delivered its entries
        #: (a reply slower than the socket timeout), which now wait in this consumer's pending
        #: entries; the next read takes those first instead of leaving them to a reclaim.
        self._reread = False
        self._next_tick = 0.0

    def stop(self) -> None:
        """Ask the loop to end after the batches in hand."""
        self._stop.set()

    async def run(self) -> None:
        settings = self.bus.settings
        log.info("agent %s: consumer %s on %s", self.name, self.consumer, self.stream)
        handler = self.handler
        depth = max(1, handler.batches_in_flight) if isinstance(handler, Overlapping) else 1
        count = handler.batch_entries if isinstance(handler, Batching) else settings.batch
        #: Batches in hand, oldest first (at most ``depth``).
        in_hand: deque[asyncio.Future[None]] = deque()
        try:
            while not self._stop.is_set():
                try:
                    if not self.running:
                        await self.bus.ensure_group(self.stream, self.name)
                        self.running = True
                    if self._unacked:
                        await self.bus.ack(self.stream, self.name, self._unacked)
                        self._unacked = []
                    if in_hand and (
                        self._retry or self._reread or time.monotonic() >= self._next_claim
                    ):
                        # a retry waits for the batches before it; a reclaim or a read of
                        # this consumer's pending entries would take those in hand too
                        while in_hand:
                            await in_hand.popleft()
                    batch = await self._next_batch(count, settings.block, settings.claim_idle)
                    if batch:
                        in_hand.append(asyncio.ensure_future(self._process(batch)))
                    while in_hand and (len(in_hand) >= depth or not batch):
                        await in_hand.popleft()
                    await self._maybe_tick()
                except BusUnavailable as exc:
                    self._record_error(exc)
                    self._reread = True
                    await self._pause()
            for done in await asyncio.gather(*in_hand, return_exceptions=True):
                if isinstance(done, BaseException):
                    log.warning("agent %s: a batch in hand at stop: %s", self.name, done)
        finally:  # cancelled (a stop that ran out of time): so are the batches in hand
            for task in in_hand:
                task.cancel()
        self.running = False
        self.bus.leave(self.stream, self.name)
        if isinstance(self.handler, Closing):
            try:
                await self.handler.close()
            except Exception as exc:
                log.warning("agent %s: close failed: %s", self.name, exc)
        log.info("agent %s: stopped", self.name)

    async def _next_batch(self, count: int, block: float, claim_idle: float) -> list[Entry]:
        if self._retry:
            return self._retry.popleft()
        if self._reread:
            own = await self.bus.read(
                self.stream, self.name, self.consumer, count=count, block=block, own=True
            )
            self._reread = False
            if own:
                log.warning("agent %s: read %d entries again after a failure", self.name, len(own))
                return own
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + claim_idle / 2
            claimed = await self.bus.claim_stale(
                self.stream, self.name, self.consumer, min_idle=claim_idle, count=count
            )
            if claimed.dead:
                await self._dead_letter(claimed.dead, "delivered too many times")
            if claimed.retry:
                self.stats.reclaimed += len(claimed.retry)
                log.warning("agent %s: reclaimed %d stale entries", self.name, len(claimed.retry))
                return claimed.retry
        return await self.bus.read(self.stream, self.name, self.consumer, count=count, block=block)

    async def _process(self, batch: list[Entry]) -> None:
        others = [e.id for e in batch if e.only_for is not None and e.only_for != self.name]
        if others:  # put back from the dead letters for another group: handled here before
            await self.bus.ack(self.stream, self.name, others)
            batch = [e for e in batch if e.only_for is None or e.only_for == self.name]
            if not batch:
                return
        self.stats.entries += len(batch)
        self.stats.events += sum(len(e.events) for e in batch)
        undecodable = [e for e in batch if e.broken or not e.raw]
        if undecodable:
            await self._dead_letter(undecodable, "entry does not hold packed events")
            batch = [e for e in batch if e.raw and not e.broken]
            if not batch:
                return
        try:
            await self.handler(batch)
        except TRANSIENT as exc:
            self._record_error(exc)
            log.warning("agent %s: handler waits for a service: %s", self.name, exc)
            self._retry.appendleft(batch)
            await self._pause()
            return
        except Exception as exc:  # the handler is user code: any failure is retried
            self._record_error(exc)
            log.exception("agent %s: handler failed on %d entries", self.name, len(batch))
            await self._retry_later(batch, exc)
            await self._pause()
            return
        self.stats.last_batch_at = time.time()
        self._failures = 0  # the backoff grows while batches keep failing, not past a success
        ids = [e.id for e in batch]
        for entry_id in ids:
            self._attempts.pop(entry_id, None)
        try:
            await self.bus.ack(self.stream, self.name, ids)
        except BusUnavailable:
            self._unacked.extend(ids)  # the side effect is done; ack when Redis is back
            raise
        self.stats.acked += len(ids)

    async def _maybe_tick(self) -> None:
        """Run the handler's tick when due; its failures are logged, never fatal to the loop."""
        handler = self.handler
        if not isinstance(handler, Ticking) or time.monotonic() < self._next_tick:
            return
        self._next_tick = time.monotonic() + handler.tick_interval
        try:
            await handler.tick()
        except Exception as exc:
            self._record_error(exc)
            log.warning("agent %s: tick failed: %s", self.name, exc)

    async def _retry_later(self, batch: list[Entry], exc: Exception) -> None:
        if len(batch) > 1:  # find the poison entry: retry each one alone
            self._retry.extend([entry] for entry in batch)
            return
        entry = batch[0]
        made = self._attempts.get(entry.id, entry.deliveries)  # including the one that failed
        if made >= self.bus.settings.max_deliveries:
            self._attempts.pop(entry.id, None)
            await self._dead_letter([entry], f"{type(exc).__name__}: {exc}")
            return
        self._attempts[entry.id] = made + 1
        self._retry.appendleft([entry])

    async def _dead_letter(self, entries: list[Entry], reason: str) -> None:
        await self.bus.dead_letter(self.stream, self.name, entries, reason)
        self.stats.dead_lettered += len(entries)

    def _record_error(self, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
        self.stats.last_error_at = time.time()
        if isinstance(exc, BusUnavailable):
            log.warning("agent %s: %s", self.name, exc)

    async def _pause(self) -> None:
        """Back off, but wake at once when asked to stop."""
        self._failures += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.backoff.delay(self._failures))
