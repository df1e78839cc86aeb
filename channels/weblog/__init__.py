"""The web channel: Segment-compatible tracking API, pixel, JS tracker, access-log import."""

from __future__ import annotations

from aiohttp import web

from channels.weblog import capture, demo, pixel, segment, tracker


class WebChannel:
    name = "web"

    def setup(self, app: web.Application) -> None:
        capture.setup(app)
        segment.setup(app)
        pixel.setup(app)
        tracker.setup(app)
        demo.setup(app)
