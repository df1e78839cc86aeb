"""collector: events → the data mart and the warehouse, the whole chain in one pass.

One consumer group on ``events`` that runs filter, sessions, identity, profile and sync on each
batch in memory, instead of publishing it to ``filtered``, ``sessionized`` and ``identified``
and reading it back at every step (each hop packs, writes, reads and acknowledges every event
once more). The steps are the agents' own code, so the rules are theirs. A batch is
acknowledged once its profiles and facts are written. Up to :data:`IN_FLIGHT` batches are in
hand at once, queued in reading order at each ordered step (sessions, identity), so one batch's
profiles and facts are written while the next is sessionized and resolved; the filter takes the
ids of the batches in hand as seen, so a copy of an event in the next batch is still a
duplicate. Crash safety is the chain's: every step is idempotent on event ids, and the filter
marks the batch's ids as seen only after the last step, so a replay runs through whole again
and changes nothing. A failing batch is retried after the one in hand beside it, whose events
may then reach the steps before the failed batch's do — as with two members of the group.
Finished visits still go to the ``sessions`` stream for ``sync-sessions``; the tick runs the
steps' ticks (idle visits, interrupted merges, customer snapshots).

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
from gateway.keys import EVENTS

log = logging.getLogger(__name__)

STREAM = EVENTS
#: The agents the chain stands for.
STEPS = ("filter", "sessions", "identity", "profile", "sync")
#: Batches in hand at once: the next batches are sessionized and resolved while the ones before
#: wait on Redis and the warehouse. (bench/collector.py, alternating rounds: whole batches ran
#: level with the same batches cut into pipelined parts of 10,000 events, with fewer and larger
#: script calls and less CPU. Three in hand ran level with two while DuckDB checkpointed in
#: every batch's COMMIT; since it does not, three keep the loop busier: 83-84 % of the run
#: against 80 %.)
IN_FLIGHT = 3


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
        self.batch_entries = config.collector.batch
        self._sessions = asyncio.Lock()
        self._identity = asyncio.Lock()

    async def __call__(self, entries: Sequence[Entry]) -> None:
        screened = await self.filter.screen(entries)
        try:
            # The locks keep batches in reading order at sessions and identity (asyncio's
            # locks are first come, first served), so a visitor's events meet the rules in
            # order, while the batch before has its profiles and facts written.
            async with self._sessions:
                batches = await self.sessions.assign(screened.events)
            async with self._identity:
                batches = await self.identity.resolve(batches)
            events = [event for batch in batches for event in batch]
            await together(self.profiles.update(events), self.sync.load(events))
            await self.filter.mark(screened)
        finally:
            self.filter.release(screened)

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
