"""identity: sessionized → identified. Resolves each event's identifiers to one customer id.

Per batch, one script call per site (and per :data:`CHUNK` events) resolves, links and merges
in the site's identity graph (:mod:`gateway.datamart.identity`) atomically; each event then
leaves with ``customer_id`` set (None for bots and for events that name nobody). Merged
customers' profiles are folded into the survivors before the events go on, and the periodic
tick finishes folds a crash interrupted. Replays are harmless: links are made once, merges
happen once, and a new customer's id derives from its first identifier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from gateway import keys as K
from gateway.agents.runtime import Handler
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.datamart import identity
from gateway.datamart.identifiers import identifiers_of
from gateway.datamart.lua import execute, text
from gateway.datamart.store import StoreSettings, complete_merge
from gateway.events import Event

log = logging.getLogger(__name__)

STREAM = K.SESSIONIZED
OUTPUT = K.IDENTIFIED
#: Events per resolve script call (a script blocks Redis while it runs).
CHUNK: Final = 200


class Identity:
    """The identity agent's handler, with its tick."""

    def __init__(self, bus: Bus, config: Config) -> None:
        self.bus = bus
        self.keys = bus.keys
        self.sites = tuple(config.sites)
        self.max_links = config.collector.max_merges_per_identifier
        self.max_ids = config.collector.max_identifiers
        self.settings = StoreSettings.from_config(config.collector)
        self.tick_interval = config.collector.tick_interval
        self.merges = 0

    async def __call__(self, entries: Sequence[Entry]) -> None:
        resolved = await self.resolve([entry.events for entry in entries])
        batches: list[list[Event]] = [events for events in resolved if events]
        if batches:
            await self.bus.publish_many(OUTPUT, batches, share=True)

    async def resolve(self, batches: Sequence[Sequence[Event]]) -> list[list[Event]]:
        """``batches`` with each event's ``customer_id`` set (on the events themselves, as
        :meth:`Sessions.assign <gateway.agents.sessions.Sessions.assign>` does; links and merges
        made)."""
        out = [list(events) for events in batches]
        by_site: dict[str, list[tuple[Event, dict[str, Any]]]] = {}
        for events in out:
            for event in events:
                if event.context.get("bot") is True:  # flagged by the filter
                    continue
                ids = identifiers_of(event)
                if ids:
                    at = int(event.timestamp.timestamp() * 1000)  # ms(), inline
                    item = identity.payload(event.site, event.event_id, event.type, at, ids)
                    items = by_site.get(event.site)
                    if items is None:
                        items = by_site[event.site] = []
                    items.append((event, item))
        calls = [
            (site, items[n : n + CHUNK])
            for site, items in by_site.items()
            for n in range(0, len(items), CHUNK)
        ]
        if calls:
            commands = [identity.RESOLVE.load()]
            commands += [
                identity.resolve_command(
                    self.keys, site, [item for _, item in chunk], self.max_links, self.max_ids
                )
                for site, chunk in calls
            ]
            replies = (await execute(self.bus, commands))[1:]
            created: list[tuple[str, str]] = []
            for (site, chunk), reply in zip(calls, replies, strict=True):
                result = identity.parse_resolution(reply)
                for (event, _), customer in zip(chunk, result.customers, strict=True):
                    event.customer_id = customer
                created += [(site, c) for c in result.created]
                for merged, survivor in result.merges:
                    await self._fold(site, merged, survivor)
            if created:  # so the read API finds a new customer's site before its profile
                await execute(
                    self.bus,
                    [(b"HSETNX", self.keys.profile(c, "p"), b"site", site) for site, c in created],
                )
        return out

    async def _fold(self, site: str, merged: str, survivor: str) -> None:
        await complete_merge(self.bus, self.keys, merged, survivor, self.settings)
        await execute(self.bus, [(b"SREM", self.keys.pending_folds(site), f"{merged} {survivor}")])
        self.merges += 1
        log.info("identity: customer %s merged into %s", merged, survivor)

    async def tick(self) -> None:
        """Finish the profile folds of merges a crash interrupted."""
        for site in self.sites:
            pending = await self.bus.client.smembers(self.keys.pending_folds(site))
            for item in pending:
                merged, _, survivor = text(item).partition(" ")
                await self._fold(site, merged, survivor)


def handler(bus: Bus, config: Config) -> Handler:
    """The identity agent's handler (``AGENTS["identity"]``)."""
    return Identity(bus, config)
