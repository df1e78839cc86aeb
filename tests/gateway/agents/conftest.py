"""Fixtures of the collector tests: the chain on the service Redis, under a prefix of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.bus import Bus
from gateway.keys import Keys
from tests.gateway.agents.chain import BUS, COLLECTOR, Chain


@pytest.fixture
def make_chain(
    redis_client: aioredis.Redis, prefix: str, make_config: Callable[..., Any]
) -> Callable[..., Chain]:
    """``make_chain("[collector]\\nmax_identifiers = 5", ...)`` → a Chain on the service Redis."""

    def make(*sections: str, **env: str) -> Chain:
        config = make_config("", prefix, BUS, *(sections or (COLLECTOR,)), **env)
        return Chain(config, redis_client, Bus(redis_client, Keys(prefix), config.bus))

    return make


@pytest.fixture
def chain(make_chain: Callable[..., Chain]) -> Chain:
    return make_chain()
