"""erp: keeps the catalogue, the stores and the stock levels in step with the ERP.

It has no entries of its own to read (its stream, ``erp``, is one nothing publishes to: the
runtime runs it as a consumer group only to supervise it like every agent). Its tick syncs
each entity whose interval (``erp.*_interval``) is due: ``dim_store``, ``dim_product``,
``product_stock`` and the stock cache in Redis, with a ``Stock Changed`` event on the events
stream per level that changed. A failing sync backs off and marks the entity stale.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.bus import Entry
from gateway.erp.sync import ErpSync
from gateway.keys import ERP

STREAM = ERP


class ErpAgent:
    """The Ticking handler: nothing per batch, the due syncs per tick."""

    def __init__(self, sync: ErpSync) -> None:
        self.sync = sync
        # The runtime ticks no more often than this; the shortest interval sets the pace.
        self.tick_interval = min(sync.intervals.values())

    async def __call__(self, entries: Sequence[Entry]) -> None:
        """Nothing publishes to the agent's stream; anything found there is ignored."""

    async def tick(self) -> None:
        await self.sync.run_due()
