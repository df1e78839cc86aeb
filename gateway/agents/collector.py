"""collector: events → the data mart and the warehouse, the whole chain in one pass.

One consumer group on ``events`` that runs filter, sessions, identity, profile and sync on each
batch in memory, instead of publishing it to ``filtered``, ``sessionized`` and ``identified``
and reading it back at every step (each hop packs, writes, reads and acknowledges every event
once more). The steps are the agents' own code, so the rules are theirs; the batch is
acknowledged once the profiles and the facts are written. Crash safety is the chain's: every
step is idempotent on event ids, and the filter marks the batch's ids as seen only after the
last step, so a replay runs through whole again and changes nothing. Finished visits still go
to the ``sessions`` stream for ``sync-sessions``; the tick runs the steps' ticks (idle visits,
interrupted merges, customer snapshots).

``touchpoint serve`` runs it by default. The five agents stay, for scaling a step across
processes (``touchpoint agent identity`` on more machines); ``agents.run`` names this one or
those, not both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

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
#: Events per part: a batch goes through the steps as a pipeline of parts of about this size.
PART = 10000


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


class Collector:
    """The collector agent's handler, with its tick."""

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
        outcomes = await asyncio.gather(
            *[self._part(part) for part in parts(screened.events, PART)], return_exceptions=True
        )
        for outcome in outcomes:  # all parts end before a failure goes up; its type says
            if isinstance(outcome, BaseException):  # whether the batch waits or is retried
                raise outcome
        await self.filter.mark(screened)

    async def _part(self, batches: list[list[Event]]) -> None:
        """One part through the steps; the locks keep parts in order at sessions and identity
        (asyncio's locks are first come, first served), so a visitor's events meet the rules
        in order, while a part's profile and facts are written as the next is resolved."""
        async with self._sessions:
            batches = await self.sessions.assign(batches)
        async with self._identity:
            batches = await self.identity.resolve(batches)
        events = [event for batch in batches for event in batch]
        outcomes = await asyncio.gather(
            self.profiles.update(events), self.sync.load(events), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

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
