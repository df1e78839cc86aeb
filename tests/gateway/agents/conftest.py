"""Fixtures of the collector tests: the chain on the service Redis, under a prefix of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.bus import Bus
from gateway.keys import Keys
from gateway.redis import connect
from tests.gateway.agents.chain import BUS, COLLECTOR, Chain


@pytest.fixture
async def service(service_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(service_redis_url, timeout=5.0)
    yield client
    await client.aclose()


@pytest.fixture
def make_chain(
    service: aioredis.Redis, prefix: str, make_config: Callable[..., Any]
) -> Callable[..., Chain]:
    """``make_chain("[collector]\\nmax_identifiers = 5", ...)`` → a Chain on the service Redis."""

    def make(*sections: str, **env: str) -> Chain:
        config = make_config("", prefix, BUS, *(sections or (COLLECTOR,)), **env)
        return Chain(config, service, Bus(service, Keys(prefix), config.bus))

    return make


@pytest.fixture
def chain(make_chain: Callable[..., Chain]) -> Chain:
    return make_chain()
