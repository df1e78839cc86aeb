"""The one interface between the gateway and a channel adapter."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web


class ChannelAdapter(Protocol):
    """A channel registers its HTTP routes (and any resources as cleanup contexts) on the app.

    Outbound delivery (``deliver(message) -> outcome``) joins this Protocol with the push engine.
    """

    name: str

    def setup(self, app: web.Application) -> None: ...
