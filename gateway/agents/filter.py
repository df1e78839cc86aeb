"""filter: events → filtered. Drops malformed and duplicate events, flags bot traffic.

The first link of the collector's chain. An event is malformed when it names no configured
site, has no id, or breaks the spec in a way ingest would have refused (a track without a
name, an alias without both ids, a time before 2000 or a day ahead of its reception). A
duplicate is an event whose (site, event_id) passed in the last ``collector.dedup_window``
seconds: ids are kept in one set per site and time bucket (as the publisher does), checked
before publishing and marked only after, so a failed publish never hides an event. Bots
(``context.bot``, or a user-agent parse saying so) pass on flagged, for reports to count; every
later stateful agent ignores them. One entry out per entry in (none when nothing is left).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from mypy_extensions import mypyc_attr

from gateway.agents.runtime import Handler
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.events import AHEAD, EARLIEST, Event, pack
from gateway.keys import EVENTS, FILTERED
from gateway.pacing import Pace

log = logging.getLogger(__name__)

STREAM = EVENTS
OUTPUT = FILTERED
#: Ids per SMISMEMBER / SADD command.
ID_CHUNK: Final = 5000


def problem(event: Event, sites: Container[str]) -> str | None:
    """Why ``event`` is malformed, or None."""
    if event.site not in sites:
        return f"unknown site {event.site!r}"
    if not event.event_id.strip():
        return "no event id"
    if event.type == "track" and not event.name:
        return "track without a name"
    if event.type == "alias" and not (event.previous_id and event.user_id):
        return "alias without previousId and userId"
    if event.timestamp < EARLIEST:
        return "timestamp before 2000"
    if event.timestamp > event.received_at + AHEAD:
        return "timestamp more than a day after reception"
    return None


def flagged(event: Event) -> Event:
    """The event with ``context.bot = true`` when it is a bot's (the later agents look at that
    flag only)."""
    context = event.context
    if context.get("bot") is True:
        return event
    parsed = context.get("userAgentData")
    if isinstance(parsed, dict) and parsed.get("bot") is True:
        return msgspec.structs.replace(event, context={**context, "bot": True})
    return event


@dataclass(slots=True)
class Screened:
    """What :meth:`Filter.screen` let through, per entry, and the ids to mark afterwards."""

    events: list[list[Event]]
    #: Per entry: whether all its events passed unchanged (its packed form can go on as is).
    whole: list[bool]
    fresh: dict[str, list[str]]
    bucket: int


@dataclass
class FilterStats:
    """What the filter did since it started (for logs and tests)."""

    passed: int = 0
    duplicates: int = 0
    malformed: int = 0
    bots: int = 0


@mypyc_attr(native_class=False)  # an ordinary class: tests replace methods on instances
class Filter:
    """The filter agent's handler."""

    def __init__(self, bus: Bus, config: Config) -> None:
        self.bus = bus
        self.keys = bus.keys
        self.sites = frozenset(config.sites)
        self.window_ms = int(config.collector.dedup_window * 1000)
        self.stats = FilterStats()
        #: Per site, the ids passed by a screen and not yet marked or released: a batch
        #: screened while an earlier one is in hand (the collector) takes them as seen.
        self._in_hand: dict[str, set[str]] = {}
        self._screening = asyncio.Lock()

    async def __call__(self, entries: Sequence[Entry]) -> None:
        screened = await self.screen(entries)
        out: list[list[Event]] = []
        packed: list[bytes] = []
        for entry, events, whole in zip(entries, screened.events, screened.whole, strict=True):
            if events:
                out.append(events)
                # an entry that passes whole and unchanged goes on as it came: no packing
                packed.append(entry.raw if whole and entry.raw else pack(events))
        try:
            if out:
                await self.bus.publish_many(OUTPUT, out, share=True, packed=packed)
            await self.mark(screened)
        finally:
            self.release(screened)

    async def screen(self, entries: Sequence[Entry]) -> Screened:
        """Per entry, its events that pass (flagged when bots); nothing is marked yet. The
        caller marks them (:meth:`mark`) once done with them, and releases them either way
        (:meth:`release`): until then a later screen takes them as seen. Screens run one at a
        time, in call order: one started while another waits on Redis would otherwise miss
        the ids the other is about to take in hand."""
        async with self._screening:
            return await self._screen(entries)

    async def _screen(self, entries: Sequence[Entry]) -> Screened:
        bucket = int(time.time() * 1000) // self.window_ms
        kept: list[list[Event]] = []
        #: Entries whose events all pass unchanged so far.
        whole: list[bool] = []
        dropped: list[tuple[str, str]] = []
        by_site: dict[str, list[str]] = {}
        sites = self.sites
        pace = Pace("filter.screen")
        for entry in entries:
            await pace()
            good = []
            same = True
            for event in entry.events:
                reason = problem(event, sites)
                if reason is None:
                    passed = flagged(event)
                    same = same and passed is event
                    good.append(passed)
                    ids = by_site.get(event.site)
                    if ids is None:
                        ids = by_site[event.site] = []
                    ids.append(event.event_id)
                else:
                    same = False
                    dropped.append((event.event_id[:80], reason))
            kept.append(good)
            whole.append(same)
        if dropped:
            self.stats.malformed += len(dropped)
            log.warning(
                "filter: dropped %d malformed event(s), e.g. %r: %s", len(dropped), *dropped[0]
            )
        # What is in hand now, taken before asking Redis: an id released after this was marked
        # before its release, so Redis has it by then (taken after the reply, a batch marked
        # and released meanwhile would be in neither).
        held = {site: set(self._in_hand.get(site, ())) for site in by_site}
        seen = await self._seen(by_site, bucket)
        for site, taken in held.items():
            seen[site].update(taken)
        screened = Screened([], [], {site: [] for site in by_site}, bucket)
        fresh = screened.fresh
        for events, same in zip(kept, whole, strict=True):
            await pace()
            unique = []
            for event in events:
                site_seen = seen[event.site]
                if event.event_id in site_seen:
                    self.stats.duplicates += 1
                    same = False
                    continue
                site_seen.add(event.event_id)  # a later copy in this batch is a duplicate too
                unique.append(event)
                fresh[event.site].append(event.event_id)
                self.stats.bots += event.context.get("bot") is True
            self.stats.passed += len(unique)
            screened.events.append(unique)
            screened.whole.append(same)
        for site, ids in fresh.items():
            self._in_hand.setdefault(site, set()).update(ids)
        return screened

    async def mark(self, screened: Screened) -> None:
        """Mark the passed ids as seen: call once what they feed is published or done."""
        commands: list[tuple[Any, ...]] = []
        for site, ids in screened.fresh.items():
            key = self.keys.filter_seen(site, self.window_ms, screened.bucket)
            for i in range(0, len(ids), ID_CHUNK):
                commands.append((b"SADD", key, *ids[i : i + ID_CHUNK]))
            commands.append((b"PEXPIRE", key, 2 * self.window_ms))
        if commands:
            await self.bus.execute(commands)

    def release(self, screened: Screened) -> None:
        """Forget ``screened``'s ids as in hand: after :meth:`mark`, or when the batch failed
        (its retry must find them unseen)."""
        for site, ids in screened.fresh.items():
            held = self._in_hand.get(site)
            if held is not None:
                held.difference_update(ids)
                if not held:
                    del self._in_hand[site]

    async def _seen(self, by_site: dict[str, list[str]], bucket: int) -> dict[str, set[str]]:
        """Per site, the ids already passed in this bucket or the one before."""
        commands: list[tuple[Any, ...]] = []
        asked: list[tuple[str, list[str]]] = []
        for site, ids in by_site.items():
            for i in range(0, len(ids), ID_CHUNK):
                chunk = ids[i : i + ID_CHUNK]
                for b in (bucket, bucket - 1):
                    commands.append(
                        (b"SMISMEMBER", self.keys.filter_seen(site, self.window_ms, b), *chunk)
                    )
                asked.append((site, chunk))
        replies = await self.bus.execute(commands)
        seen: dict[str, set[str]] = {site: set() for site in by_site}
        for n, (site, chunk) in enumerate(asked):
            current, previous = replies[2 * n], replies[2 * n + 1]
            seen[site].update(i for i, a, b in zip(chunk, current, previous, strict=True) if a or b)
        return seen


def handler(bus: Bus, config: Config) -> Handler:
    """The filter agent's handler (``AGENTS["filter"]``)."""
    return Filter(bus, config)
