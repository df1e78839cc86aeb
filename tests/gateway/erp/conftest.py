"""The ERP tests run on both warehouse engines (the warehouse suite's fixtures) and the service
Redis, with a drop folder of their own."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.bus import Bus
from gateway.config import BusConfig, ErpConfig
from gateway.erp.files import FileConnector
from gateway.erp.sync import ErpSync
from gateway.keys import Keys
from gateway.warehouse import Warehouse
from tests.gateway.warehouse.conftest import (  # noqa: F401  (fixtures)
    engine,
    open_engine,
    pg_dsn,
    warehouse,
    warehouse_section,
)


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    return tmp_path / "erp-drop"


@pytest.fixture
def syncer(
    warehouse: Warehouse,  # noqa: F811
    redis_client: aioredis.Redis,
    prefix: str,
    drop: Path,
) -> ErpSync:
    """A sync of the demo-seeded drop folder into this test's warehouse and keys."""
    keys = Keys(prefix)
    bus = Bus(redis_client, keys, BusConfig())
    return ErpSync(FileConnector(drop), warehouse, redis_client, keys, bus, ErpConfig())
