"""The store channel: tills send signed sales, returns and voids; offline backlogs come as
NDJSON batches or through ``touchpoint import-pos``."""

from __future__ import annotations

from aiohttp import web

from channels.pos import receive


class PosChannel:
    name = "pos"

    def setup(self, app: web.Application) -> None:
        receive.setup(app)
