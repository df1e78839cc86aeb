"""collector: events → the data mart and the warehouse, the whole chain in one pass.

One consumer group on ``events`` that runs filter, sessions, identity, profile and sync on each
batch in memory, instead of publishing it to ``filtered``, ``sessionized`` and ``identified``
and reading it back at every step (each hop packs, writes, reads and acknowledges every event
once more). The steps are the agents' own code, so the rules are theirs. A batch goes through
as a pipeline of parts (:data:`PART`), in order at sessions and identity, and is acknowledged
once every part's profiles and facts are written. Up to :data:`IN_FLIGHT` batches are in hand
at once, their parts queued in reading order at each ordered step; the filter takes the ids of
the batches in hand as seen, so a copy of an event in the next batch is still a duplicate.
Crash safety is the chain's: every step is idempotent on event ids, and the filter marks the
batch's ids as seen only after the last step, so a replay runs through whole again and changes
nothing. A failing batch is retried after the one in hand beside it, whose events may then
reach the steps before the failed batch's do — as with two members of the group. Finished
visits still go to the ``sessions`` stream for ``sync-sessions``; the tick runs the steps'
ticks (idle visits, interrupted merges, customer snapshots).

``touchpoint serve`` runs it by default. The five agents stay, for scaling a step across
processes (``touchpoint agent identity`` on more machines); ``agents.run`` names this one or
those, not both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

from gateway.agents.filter import Filter
from gateway.agents.identity import Identity
from gateway.agents.profile import Profiles
from gateway.agents.sessions import Sessions
from gateway.agents.sync import EventsSync
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.events import Event
from gateway.keys import EVENTS

log = logging.getLogger(__name__)

STREAM = EVENTS
#: The agents the chain stands for.
STEPS = ("filter", "sessions", "identity", "profile", "sync")
#: Events per part: a batch goes through the steps as a pipeline of parts of about this size
#: (bench/collector.py: of 2,500 to 40,000, ~10,000 ran fastest with the default batch).
PART = 10000
#: Batches in hand at once: the next batch's first parts run while the last parts of the one
#: before wait on Redis and the warehouse (bench/collector.py, a round of each: 2 ran faster
#: than 1 and 3).
IN_FLIGHT = 2


def parts(batches: list[list[Event]], size: int) -> list[list[list[Event]]]:
    """``batches`` (events per entry) cut, between entries, into runs of >= ``size`` events."""
    out: list[list[list[Event]]] = []
    run: list[list[Event]] = []
    count = 0
    for events in batches:
        if not events:
            continue
        run.append(events)
        count += len(events)
        if count >= size:
            out.append(run)
            run, count = [], 0
    if run:
        out.append(run)
    return out


async def together(*steps: Awaitable[None]) -> None:
    """Run ``steps`` at once; all end before the first failure goes up (its type says whether
    the runtime waits for a service or retries the batch)."""
    for outcome in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


class Collector:
    """The collector agent's handler, with its tick."""

    batches_in_flight = IN_FLIGHT

    def __init__(self, bus: Bus, config: Config, sync: EventsSync) -> None:
        self.filter = Filter(bus, config)
        self.sessions = Sessions(bus, config)
        self.identity = Identity(bus, config)
        self.profiles = Profiles(bus, config)
        self.sync = sync
        self.tick_interval = config.collector.tick_interval
        self._sessions = asyncio.Lock()
        self._identity = asyncio.Lock()

    async def __call__(self, entries: Sequence[Entry]) -> None:
        screened = await self.filter.screen(entries)
        try:
            failed = asyncio.Event()
            await together(*[self._part(part, failed) for part in parts(screened.events, PART)])
            await self.filter.mark(screened)
        finally:
            self.filter.release(screened)

    async def _part(self, batches: list[list[Event]], failed: asyncio.Event) -> None:
        """One part through the steps. The locks keep parts in order at sessions and identity
        (asyncio's locks are first come, first served), so a visitor's events meet the rules
        in order, while a part's profile and facts are written as the next is resolved; once a
        part fails, the later ones stop at the next lock (the batch is retried whole)."""
        try:
            async with self._sessions:
                if failed.is_set():
                    return
                batches = await self.sessions.assign(batches)
            async with self._identity:
                if failed.is_set():
                    return
                batches = await self.identity.resolve(batches)
            events = [event for batch in batches for event in batch]
            await together(self.profiles.update(events), self.sync.load(events))
        except BaseException:
            failed.set()
            raise

    async def tick(self) -> None:
        """Each step's chores; one failing does not keep the others from theirs."""
        failed: Exception | None = None
        for chore in (self.sessions.tick, self.identity.tick, self.sync.tick):
            try:
                await chore()
            except Exception as exc:
                log.warning("collector: %s failed: %s", chore.__qualname__, exc)
                failed = failed or exc
        if failed:
            raise failed
