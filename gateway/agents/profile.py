"""profile: identified → the data mart. Updates each customer's profile, once per event.

The end of the chain. Each event with a customer (bots never have one) becomes a delta
(:func:`gateway.datamart.deltas.event_delta`: counters, first/last seen per channel, traits,
consent, recent items, interests, preferred store, time zone, the visit); a batch's events of
one customer go as one combined delta (:func:`gateway.datamart.deltas.combine`), with one
script call per customer, all in one pipeline. The script skips event ids the customer already
processed — a combined delta is applied only when none of its ids was, else its other events go
again one by one — so a replayed entry changes nothing; an event for a customer merged into
another goes to the survivor once the fold is complete (:mod:`gateway.datamart.store`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mypy_extensions import mypyc_attr

from gateway import keys as K
from gateway.agents.runtime import Handler
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.datamart.deltas import Combined, combined
from gateway.datamart.store import StoreSettings, apply
from gateway.events import Event
from gateway.pacing import paced

STREAM = K.IDENTIFIED


@mypyc_attr(native_class=False)  # an ordinary class: tests replace methods on instances
class Profiles:
    """The profile agent's handler."""

    def __init__(self, bus: Bus, config: Config) -> None:
        self.bus = bus
        self.settings = StoreSettings.from_config(config.collector)
        self.applied = 0

    async def __call__(self, entries: Sequence[Entry]) -> None:
        await self.update([event for entry in entries for event in entry.events])

    async def update(self, events: Sequence[Event]) -> None:
        """Apply ``events`` (identified) to their customers' profiles."""
        groups: dict[str, list[Event]] = {}
        async for part in paced(events, step="profile"):
            for event in part:
                if event.customer_id and event.context.get("bot") is not True:
                    groups.setdefault(event.customer_id, []).append(event)
        if not groups:
            return
        self.applied += await apply(self.bus, self.bus.keys, _changes(groups), self.settings)


def _changes(groups: dict[str, list[Event]]) -> Iterator[tuple[str, list[Combined]]]:
    """Each customer's combined deltas, made as the pipeline is packed: Redis applies one part
    while the next is made (a generator function: mypyc makes a generator expression a list)."""
    for customer, mine in groups.items():
        yield customer, combined(mine)


def handler(bus: Bus, config: Config) -> Handler:
    """The profile agent's handler (``AGENTS["profile"]``)."""
    return Profiles(bus, config)
