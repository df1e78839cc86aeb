"""sessions: filtered → sessionized, and finished visits → sessions.

Each event (bots, e-mail and ERP events aside) gets the ``session_id`` of its visitor's visit
(:mod:`gateway.datamart.sessions` says where visits end). A visitor's open session lives in
Redis under its own hash tag, with a version token; a batch reads the open sessions of its
visitors in one pipeline, runs the rules, and writes each back with a compare-and-set script,
so two members racing on one visitor never lose an event (the loser recomputes). The same
script records event id → session id for the batch (per visitor and time bucket, kept two
``collector.dedup_window`` s), so a replayed event gets its session again and counts nothing
twice. Finished sessions are published before the state that ends them is written (a crash in
between publishes a record twice; consumers keep one per session id). The periodic tick
closes sessions idle on the wall clock for ``collector.session_timeout``.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

from mypy_extensions import mypyc_attr

from gateway import keys as K
from gateway.agents.runtime import Handler
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.datamart.lua import Script, execute, text
from gateway.datamart.records import OpenSession, SessionRecord
from gateway.datamart.sessions import (
    SESSIONLESS,
    Rules,
    advance,
    close,
    pack_records,
    pack_state,
    unpack_state,
)
from gateway.errors import BusUnavailable
from gateway.events import Event
from gateway.pacing import Pace

STREAM = K.FILTERED
OUTPUT = K.SESSIONIZED
#: Rounds of compare-and-set before a batch gives up (and is retried whole).
ATTEMPTS: Final = 8
#: Idle sessions closed per round of the tick.
SWEEP: Final = 500

CAS: Final = Script(
    """
local cur = redis.call('HGET', KEYS[1], 'v') or ''
if cur ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local n = #ARGV
if n >= 5 then
  for i = 5, n, 1000 do redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 999, n))) end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"""
)

#: Remove an idle-index member unless an event touched it after ``ARGV[2]``.
UNINDEX: Final = Script(
    """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
)

Visitor = tuple[str, str]


@dataclass(slots=True)
class _Plan:
    """One visitor's part of a batch."""

    #: The visitor's events in arrival order, and their ids.
    items: list[Event]
    ids: list[str]
    #: The open session's key and how the visitor is known to the identity graph.
    key: str = ""
    kind: str = ""
    version: str = ""
    state: OpenSession | None = None
    known: dict[str, str] = field(default_factory=dict)


@mypyc_attr(native_class=False)  # an ordinary class: tests replace methods on instances
class Sessions:
    """The sessions agent's handler, with its tick."""

    def __init__(self, bus: Bus, config: Config) -> None:
        self.bus = bus
        self.keys = bus.keys
        collector = config.collector
        self.timeout_ms = int(collector.session_timeout * 1000)
        self.window_ms = int(collector.dedup_window * 1000)
        self.tick_interval = collector.tick_interval
        self.rules = {
            name: Rules(self.timeout_ms, ZoneInfo(site.timezone))
            for name, site in config.sites.items()
        }
        self.default_rules = Rules(self.timeout_ms)
        #: Version tokens: unique per process start (random) and per write (a counter).
        self._token = secrets.token_hex(6)
        self._writes = itertools.count()
        #: Sessions published; visitors whose state changed under us (recomputed).
        self.closed = 0
        self.conflicts = 0

    async def __call__(self, entries: Sequence[Entry]) -> None:
        await self.process(entries)

    async def tick(self) -> None:
        """Close idle visits (every ``collector.tick_interval``)."""
        await self.flush_idle()

    async def process(self, entries: Sequence[Entry], now_ms: int | None = None) -> None:
        """Sessionize ``entries`` and publish them on ``sessionized``, one entry per entry."""
        assigned = await self.assign([entry.events for entry in entries], now_ms)
        batches = [events for events in assigned if events]
        if batches:
            await self.bus.publish_many(OUTPUT, batches, share=True)

    async def assign(
        self, batches: Sequence[Sequence[Event]], now_ms: int | None = None
    ) -> list[list[Event]]:
        """``batches`` with each event's ``session_id`` set (on the events themselves: an
        agent's events are its own, decoded from what it read); the visits they end go to the
        ``sessions`` stream and the open ones are written back."""
        now = now_ms or int(time.time() * 1000)
        out = [list(events) for events in batches]
        pending: dict[Visitor, _Plan] = {}
        pace = Pace("sessions.assign")
        for events in out:
            await pace()
            for event in events:
                # sessionized(), inline: this runs for every event
                who = event.anonymous_id or event.user_id
                if who is None or event.channel in SESSIONLESS or event.context.get("bot") is True:
                    continue
                visitor = (event.site, who)
                plan = pending.get(visitor)
                if plan is None:
                    plan = pending[visitor] = _Plan([], [])
                    plan.key = self.keys.open_session(*visitor)
                    plan.kind = "anonymous_id" if event.anonymous_id else "user_id"
                plan.items.append(event)
                plan.ids.append(event.event_id)
        for _ in range(ATTEMPTS):
            if not pending:
                break
            await self._load(pending, now)
            pending = await self._commit(pending, now)
            self.conflicts += len(pending)
        if pending:
            raise BusUnavailable(f"sessions: {len(pending)} visitor(s) kept changing under us")
        return out

    async def _load(self, plans: dict[Visitor, _Plan], now: int) -> None:
        bucket = now // self.window_ms
        session_of_events = self.keys.session_of_events

        def commands() -> Iterator[tuple[Any, ...]]:  # made as the pipeline is packed
            for (site, visitor), plan in plans.items():
                ids = plan.ids
                yield (b"HMGET", plan.key, b"v", b"s")
                yield (b"HMGET", session_of_events(site, visitor, bucket), *ids)
                yield (b"HMGET", session_of_events(site, visitor, bucket - 1), *ids)

        replies = await execute(self.bus, commands())
        pace = Pace("sessions.load")
        for n, plan in enumerate(plans.values()):
            await pace()
            (version, blob), current, previous = replies[3 * n : 3 * n + 3]
            plan.version = text(version) if version else ""
            plan.state = unpack_state(blob) if blob else None
            plan.known = {}
            if any(current) or any(previous):
                for event_id, a, b in zip(plan.ids, current, previous, strict=True):
                    if a or b:
                        plan.known[event_id] = text(a or b)

    async def _commit(self, plans: dict[Visitor, _Plan], now: int) -> dict[Visitor, _Plan]:
        """Apply the rules and write back; the visitors whose state changed meanwhile."""
        bucket = now // self.window_ms
        ttl = 2 * self.window_ms
        ended: list[tuple[SessionRecord, _Plan]] = []
        writes: list[tuple[Any, ...]] = []
        written: list[Visitor] = []
        pace = Pace("sessions.commit")
        for (site, visitor), plan in plans.items():
            await pace()
            rules = self.rules.get(site, self.default_rules)
            state, assigned, known = plan.state, dict[str, str](), plan.known
            for event in plan.items:
                sid = known.get(event.event_id) if known else None
                if sid is None and (sid := assigned.get(event.event_id)) is None:
                    state, record = advance(state, event, rules, now)
                    if record is not None:
                        ended.append((record, plan))
                    sid = assigned[event.event_id] = state.session_id
                event.session_id = sid
            if not assigned or state is None:
                continue  # all replays: nothing to write
            mapping = [x for pair in assigned.items() for x in pair]
            token = f"{self._token}-{next(self._writes)}"
            writes.append(
                CAS.call(
                    [plan.key, self.keys.session_of_events(site, visitor, bucket)],
                    [plan.version, token, pack_state(state), ttl, *mapping],
                )
            )
            written.append((site, visitor))
        if not writes and not ended:
            return {}
        records = await self._with_customers(ended)
        commands: list[tuple[Any, ...]] = [CAS.load()]
        if records:
            commands.append(_xadd(self.keys.stream(K.SESSIONS), pack_records(records)))
        index = [x for site, visitor in written for x in (now, plans[site, visitor].key)]
        tail = [(b"ZADD", self.keys.idle_sessions(), *index)] if index else []
        replies = await execute(self.bus, commands + writes + tail)
        self.closed += len(records)
        swapped = replies[len(commands) : len(commands) + len(writes)]
        return {v: plans[v] for v, ok in zip(written, swapped, strict=True) if int(ok) == 0}

    async def _with_customers(
        self, ended: list[tuple[SessionRecord, _Plan]]
    ) -> list[SessionRecord]:
        """The records of the visits that ended, with the customer each visitor is known as
        (one round trip, only for the visitors whose visit ended)."""
        if not ended:
            return []
        lookups = [
            (b"GET", self.keys.identifier(record.site, plan.kind, record.visitor_id))
            for record, plan in ended
        ]
        customers = await execute(self.bus, lookups)
        records = []
        for (record, _), customer in zip(ended, customers, strict=True):
            record.customer_id = text(customer) if customer else None
            records.append(record)
        return records

    async def flush_idle(self, now_ms: int | None = None) -> int:
        """Close sessions that saw no event for ``collector.session_timeout``; how many."""
        now = now_ms or int(time.time() * 1000)
        cutoff = now - self.timeout_ms
        index = self.keys.idle_sessions()
        total = 0
        while True:
            rows: Any = await self.bus.client.zrangebyscore(
                index, "-inf", cutoff, start=0, num=SWEEP, withscores=True
            )
            if not rows:
                return total
            total += await self._close_idle([(text(k), float(s)) for k, s in rows], cutoff)
            if len(rows) < SWEEP:
                return total

    async def _close_idle(self, rows: list[tuple[str, float]], cutoff: int) -> int:
        replies = await execute(self.bus, [(b"HMGET", key, b"v", b"s") for key, _ in rows])
        states: list[tuple[str, str, OpenSession]] = []
        for (key, _), (version, blob) in zip(rows, replies, strict=True):
            if blob:
                states.append((key, text(version), unpack_state(blob)))
        closing = [s for s in states if s[2].touched <= cutoff]
        lookups = [
            (
                b"GET",
                self.keys.identifier(
                    s.site, "anonymous_id" if s.anonymous_id else "user_id", s.visitor
                ),
            )
            for _, _, s in closing
        ]
        customers = await execute(self.bus, lookups) if lookups else []
        records = [
            close(state, "idle", text(c) if c else None)
            for (_, _, state), c in zip(closing, customers, strict=True)
        ]
        commands: list[tuple[Any, ...]] = [CAS.load()]
        if records:
            commands.append(_xadd(self.keys.stream(K.SESSIONS), pack_records(records)))
        commands += [CAS.call([key, key], [version, "", "", 1]) for key, version, _ in closing]
        replies = (await execute(self.bus, commands))[1 + bool(records) :]
        done = {key for (key, _, _), ok in zip(closing, replies, strict=True) if int(ok)}
        live = {key for key, _, _ in states}
        unindex = [
            UNINDEX.call([self.keys.idle_sessions()], [key, score])
            for key, score in rows
            if key in done or key not in live
        ]
        unindex += [  # touched since the index said so: index them at their real time
            (b"ZADD", self.keys.idle_sessions(), b"GT", state.touched, key)
            for key, _, state in states
            if state.touched > cutoff
        ]
        if unindex:
            await execute(self.bus, [UNINDEX.load(), *unindex])
        self.closed += len(done)
        return len(done)


def _xadd(key: str, value: bytes) -> tuple[Any, ...]:
    return (b"XADD", key, b"*", K.ENTRY_FIELD, value)


def handler(bus: Bus, config: Config) -> Handler:
    """The sessions agent's handler (``AGENTS["sessions"]``)."""
    return Sessions(bus, config)
