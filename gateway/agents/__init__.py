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

from gateway.agents import collector, counts, erp, identity, profile, sessions, sync
from gateway.agents import filter as filtering
from gateway.agents.runtime import Handler
from gateway.bus import Bus
from gateway.config import Config
from gateway.erp import open_connector
from gateway.erp.sync import ErpSync
from gateway.errors import ConfigError
from gateway.keys import IDENTIFIED, SESSIONS, Keys
from gateway.warehouse import Warehouse
from gateway.warehouse.pii import pii_key


@dataclass(frozen=True)
class AgentContext:
    """What a handler factory may use."""

    config: Config
    redis: aioredis.Redis
    keys: Keys
    bus: Bus
    #: Open (and migrated) when the agent's spec says it needs one.
    warehouse: Warehouse | None = None


@dataclass(frozen=True)
class AgentSpec:
    stream: str
    make: Callable[[AgentContext], Handler]
    about: str
    needs_warehouse: bool = False


def _warehouse(ctx: AgentContext) -> Warehouse:
    if ctx.warehouse is None:
        raise ConfigError(ctx.config.source, "agents.run", "this agent needs the warehouse")
    return ctx.warehouse


def _events_sync(ctx: AgentContext) -> sync.EventsSync:
    return sync.EventsSync(
        _warehouse(ctx),
        ctx.redis,
        ctx.keys,
        pii_key(ctx.config),
        ctx.config.collector.tick_interval,
    )


AGENTS: Mapping[str, AgentSpec] = MappingProxyType(
    {
        "channel-counts": AgentSpec(
            stream=counts.STREAM,
            make=lambda ctx: counts.handler(ctx.redis, ctx.keys),
            about=counts.__doc__ or "",
        ),
        "collector": AgentSpec(
            stream=collector.STREAM,
            make=lambda ctx: collector.Collector(ctx.bus, ctx.config, _events_sync(ctx)),
            about=collector.__doc__ or "",
            needs_warehouse=True,
        ),
        "filter": AgentSpec(
            stream=filtering.STREAM,
            make=lambda ctx: filtering.handler(ctx.bus, ctx.config),
            about=filtering.__doc__ or "",
        ),
        "sessions": AgentSpec(
            stream=sessions.STREAM,
            make=lambda ctx: sessions.handler(ctx.bus, ctx.config),
            about=sessions.__doc__ or "",
        ),
        "identity": AgentSpec(
            stream=identity.STREAM,
            make=lambda ctx: identity.handler(ctx.bus, ctx.config),
            about=identity.__doc__ or "",
        ),
        "profile": AgentSpec(
            stream=profile.STREAM,
            make=lambda ctx: profile.handler(ctx.bus, ctx.config),
            about=profile.__doc__ or "",
        ),
        "sync": AgentSpec(
            stream=IDENTIFIED,
            make=_events_sync,
            about=sync.__doc__ or "",
            needs_warehouse=True,
        ),
        "sync-sessions": AgentSpec(
            stream=SESSIONS,
            make=lambda ctx: sync.sessions_handler(_warehouse(ctx)),
            about=sync.__doc__ or "",
            needs_warehouse=True,
        ),
        "erp": AgentSpec(
            stream=erp.STREAM,
            make=lambda ctx: erp.ErpAgent(_erp_sync(ctx)),
            about=erp.__doc__ or "",
            needs_warehouse=True,
        ),
    }
)


def _erp_sync(ctx: AgentContext) -> ErpSync:
    return ErpSync(
        open_connector(ctx.config), _warehouse(ctx), ctx.redis, ctx.keys, ctx.bus, ctx.config.erp
    )
