"""identity: sessionized → identified. Resolves each event's identifiers to one customer id.

Per batch, one script call per site (and per :data:`CHUNK` items) resolves, links and merges
in the site's identity graph (:mod:`gateway.datamart.identity`) atomically; a batch's events
that carry the same identifiers go as one item, resolved as they would be one by one
(:class:`_Site`). Each event then leaves with ``customer_id`` set (None for bots and for events
that name nobody). Merged customers' profiles are folded into the survivors before the events
go on, and the periodic tick finishes folds a crash interrupted. Replays are harmless: links
are made once, merges happen once, and a new customer's id derives from its first identifier.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Final

from mypy_extensions import mypyc_attr

from gateway import keys as K
from gateway.agents.runtime import Handler
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.datamart import identity
from gateway.datamart.identifiers import identifiers_of
from gateway.datamart.lua import execute, text
from gateway.datamart.store import StoreSettings, complete_merge
from gateway.events import Event
from gateway.pacing import Pace

log = logging.getLogger(__name__)

STREAM = K.SESSIONIZED
OUTPUT = K.IDENTIFIED
#: Items (events, or events with the same identifiers) per resolve script call (a script
#: blocks Redis while it runs).
CHUNK: Final = 200


@mypyc_attr(native_class=False)  # an ordinary class: tests replace methods on instances
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
        by_site: dict[str, _Site] = {}
        place = 0
        pace = Pace("identity.resolve")
        for events in out:
            await pace()
            for event in events:
                if event.context.get("bot") is True:  # flagged by the filter
                    continue
                ids = identifiers_of(event)
                if ids:
                    at = int(event.timestamp.timestamp() * 1000)  # ms(), inline
                    site = by_site.get(event.site)
                    if site is None:
                        site = by_site[event.site] = _Site(event.site)
                    site.add(event, place, at, ids)
                    place += 1
        calls = [
            (graph, graph.items[n : n + CHUNK])
            for graph in by_site.values()
            for n in range(0, len(graph.items), CHUNK)
        ]
        if calls:

            def commands() -> Iterator[tuple[Any, ...]]:  # made as the pipeline is packed
                yield identity.RESOLVE.load()
                for graph, chunk in calls:
                    payloads = [i.payload for i in chunk]
                    yield identity.resolve_command(
                        self.keys, graph.site, payloads, self.max_links, self.max_ids
                    )

            replies = (await execute(self.bus, commands()))[1:]
            created: list[tuple[str, str]] = []
            for (graph, chunk), reply in zip(calls, replies, strict=True):
                result = identity.parse_resolution(reply)
                for item, customer in zip(chunk, result.customers, strict=True):
                    item.customer = customer
                created += [(graph.site, c) for c in result.created]
                for merged, survivor, index in result.merges:
                    graph.merges.append((chunk[index].places[0], merged, survivor))
                    await self._fold(graph.site, merged, survivor)
            for graph in by_site.values():
                await graph.settle()
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


class _Item:
    """Events with the same identifiers, resolved as one by the script."""

    __slots__ = ("customer", "events", "payload", "places")

    def __init__(self, event: Event, place: int, payload: dict[str, Any]) -> None:
        self.events = [event]
        #: Each event's place in the batch (its events with identifiers, in order).
        self.places = [place]
        self.payload = payload
        self.customer: str | None = None


class _Site:
    """A batch's events of one site as the resolve script takes them.

    Events that carry the same identifiers go as one item (a visitor's page views repeat
    them): the first event resolves, links and creates; the next would find those links made
    and resolve the same. Two things could tell them apart, and both are kept: an event between
    them carrying one of the identifiers (it may link it elsewhere) closes the item, so the
    next such event starts one of its own; and a merge between them re-points the customer,
    so :meth:`settle` passes each event's customer through the merges made before it. The
    item goes with the earliest time of its events (the customer's ``first_seen``).
    """

    def __init__(self, site: str) -> None:
        self.site = site
        self.items: list[_Item] = []
        #: ``(place of the event that merged, merged, survivor)``, in order.
        self.merges: list[tuple[int, str, str]] = []
        self._open: dict[tuple[tuple[str, str], ...], _Item] = {}
        self._holder: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    def add(self, event: Event, place: int, at: int, ids: list[tuple[str, str]]) -> None:
        key = tuple(ids)
        joins = event.type != "identify" and event.type != "alias"  # those merge: their own
        if joins and (same := self._open.get(key)) is not None:
            same.events.append(event)
            same.places.append(place)
            if at < same.payload["at"]:
                same.payload["at"] = at
            return
        item = _Item(event, place, identity.payload(self.site, event.event_id, event.type, at, ids))
        self.items.append(item)
        for pair in ids:
            held = self._holder.get(pair)
            if held is not None and held != key:
                self._open.pop(held, None)
            self._holder[pair] = key
        if joins:
            self._open[key] = item
        else:
            self._open.pop(key, None)

    async def settle(self) -> None:
        """Set each event's ``customer_id``: its item's, followed through the merges made
        between the item's first event and it (looked up by the merged customer, so many
        merges in a batch cost no more per event than the few its customer went through)."""
        #: Per merged customer, its merges: (their place in :attr:`merges`, event place, survivor).
        into: dict[str, list[tuple[int, int, str]]] = {}
        for n, (at, merged, survivor) in enumerate(self.merges):
            into.setdefault(merged, []).append((n, at, survivor))
        pace = Pace("identity.settle")
        for item in self.items:
            await pace()
            customer = item.customer
            if not into or len(item.events) == 1:
                for event in item.events:
                    event.customer_id = customer
                continue
            first = item.places[0]
            for event, place in zip(item.events, item.places, strict=True):
                current, last = customer, -1
                while current in into:
                    for n, at, survivor in into[current]:
                        if n > last and first < at < place:  # the next merge of it, in span
                            last, current = n, survivor
                            break
                    else:
                        break
                event.customer_id = current


def handler(bus: Bus, config: Config) -> Handler:
    """The identity agent's handler (``AGENTS["identity"]``)."""
    return Identity(bus, config)
