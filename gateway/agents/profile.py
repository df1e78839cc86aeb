"""profile: identified → the data mart. Updates each customer's profile, once per event.

The end of the chain. Each event with a customer (bots never have one) becomes a delta
(:func:`gateway.datamart.deltas.event_delta`: counters, first/last seen per channel, traits,
consent, recent items, interests, preferred store, time zone, the visit); a batch applies them
with one script call per customer, in one pipeline. The script skips event ids the customer
already processed, so a replayed entry changes nothing; an event for a customer merged into
another goes to the survivor once the fold is complete (:mod:`gateway.datamart.store`).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway import keys as K
from gateway.agents.runtime import Handler
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.datamart.deltas import encode, event_delta
from gateway.datamart.store import StoreSettings, apply

STREAM = K.IDENTIFIED


class Profiles:
    """The profile agent's handler."""

    def __init__(self, bus: Bus, config: Config) -> None:
        self.bus = bus
        self.settings = StoreSettings.from_config(config.collector)
        self.applied = 0

    async def __call__(self, entries: Sequence[Entry]) -> None:
        groups: dict[str, list[bytes]] = {}
        for entry in entries:
            for event in entry.events:
                if event.customer_id and event.context.get("bot") is not True:
                    groups.setdefault(event.customer_id, []).append(encode(event_delta(event)))
        self.applied += await apply(self.bus, self.bus.keys, groups, self.settings)


def handler(bus: Bus, config: Config) -> Handler:
    """The profile agent's handler (``AGENTS["profile"]``)."""
    return Profiles(bus, config)
