"""The store channel: tills send signed sales, returns and voids; offline backlogs come as
NDJSON batches or through ``touchpoint import-pos``; in-store kiosks greet loyalty members."""

from __future__ import annotations

from aiohttp import web

from channels.pos import kiosk, receive


class PosChannel:
    name = "pos"

    def setup(self, app: web.Application) -> None:
        receive.setup(app)
        kiosk.setup(app)
