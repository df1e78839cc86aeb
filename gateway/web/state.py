"""The typed keys under which the app keeps its resources (``app[BUS]``...)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp import web

from gateway.agents.pool import AgentPool
from gateway.bus import Bus
from gateway.config import Config
from gateway.publisher import Publisher
from gateway.redis import EmbeddedRedis
from gateway.warehouse import Warehouse


@dataclass
class Counters:
    """What this process saw, for /metrics."""

    received: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    bots: int = 0


CONFIG = web.AppKey("config", Config)
ADMIN_TOKEN = web.AppKey("admin_token", str)
COUNTERS = web.AppKey("counters", Counters)
EMBEDDED = web.AppKey("embedded_redis", EmbeddedRedis)
REDIS = web.AppKey("redis", aioredis.Redis)
BUS = web.AppKey("bus", Bus)
PUBLISHER = web.AppKey("publisher", Publisher)
AGENTS = web.AppKey("agents", AgentPool)
WAREHOUSE: web.AppKey[Warehouse] = web.AppKey("warehouse")
