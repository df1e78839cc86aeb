"""Agents: named consumer groups on the bus, each with a batch handler.

:data:`AGENTS` maps an agent's name (its consumer group) to a factory that builds its handler
from an :class:`AgentContext`. ``touchpoint serve`` runs the ones listed in ``agents.run``
in-process; ``touchpoint agent NAME`` runs one in its own process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import redis.asyncio as aioredis

from gateway.agents import counts
from gateway.agents.runtime import Handler
from gateway.bus import Bus
from gateway.config import Config
from gateway.keys import Keys


@dataclass(frozen=True)
class AgentContext:
    """What a handler factory may use."""

    config: Config
    redis: aioredis.Redis
    keys: Keys
    bus: Bus


@dataclass(frozen=True)
class AgentSpec:
    stream: str
    make: Callable[[AgentContext], Handler]
    about: str


AGENTS: Mapping[str, AgentSpec] = MappingProxyType(
    {
        "channel-counts": AgentSpec(
            stream=counts.STREAM,
            make=lambda ctx: counts.handler(ctx.redis, ctx.keys),
            about=counts.__doc__ or "",
        ),
    }
)
