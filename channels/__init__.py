"""Channel adapters: one sub-package per channel (weblog, email, pos, mobile).

Each turns its traffic into :class:`gateway.events.Event` s and delivers push-engine output.
A channel never imports another channel; it depends on ``gateway`` contracts only, and the
gateway reaches it only through :func:`adapters` and the :class:`~channels.base.ChannelAdapter`
Protocol.
"""

from __future__ import annotations

from channels.base import ChannelAdapter


def adapters() -> list[ChannelAdapter]:
    """Every channel the app serves."""
    from channels.pos import PosChannel
    from channels.weblog import WebChannel

    return [WebChannel(), PosChannel()]
