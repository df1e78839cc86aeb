"""erp: keeps the catalogue, the stores, the stock levels, the ERP's customers and its sales
in step with the ERP.

Its tick syncs each entity whose interval (``erp.*_interval``) is due: ``dim_store``,
``dim_product``, ``product_stock`` and the stock cache in Redis (with a ``Stock Changed``
event per level that changed), customers (``identify`` events the identity agent links) and
sales (``Order Completed`` events). Its stream, ``erp``, holds requests for an immediate sync
(``POST /v1/erp/notify``): each is acknowledged once its syncs have run. A failing sync backs
off and marks the entity stale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from gateway.bus import Entry
from gateway.erp.base import Entity
from gateway.erp.notify import decode_request
from gateway.erp.sync import SYNCED, ErpSync
from gateway.keys import ERP

STREAM: str = ERP
log = logging.getLogger(__name__)


class ErpAgent:
    """The Ticking handler: requested syncs per batch, the due ones per tick."""

    def __init__(self, sync: ErpSync) -> None:
        self.sync = sync
        # The runtime ticks no more often than this; the shortest interval sets the pace.
        self.tick_interval = min(sync.intervals.values())

    async def __call__(self, entries: Sequence[Entry]) -> None:
        """Run the syncs the entries ask for, each entity once (full if any asked so)."""
        wanted: dict[Entity, bool] = {}
        for entry in entries:
            try:
                request = decode_request(entry.raw)
            except msgspec.DecodeError:
                log.warning("erp: ignored a malformed sync request %s", entry.id)
                continue
            for entity in request.entities or SYNCED:
                wanted[entity] = wanted.get(entity, False) or request.full
        for entity in SYNCED:
            if entity in wanted:
                await self.sync.sync(entity, full=wanted[entity])

    async def tick(self) -> None:
        await self.sync.run_due()

    async def close(self) -> None:
        """The agent stops: let go of the ERP (an HTTP session, a database connection)."""
        await self.sync.connector.close()
