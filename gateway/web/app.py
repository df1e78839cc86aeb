"""The app factory: every resource in its own cleanup context, nothing at import time.

Start-up order (teardown runs in reverse, each step only if its setup finished):

1. Redis: the embedded redis-server (when ``redis.url`` is empty) and the client.
2. Bus: the publisher (group commit) and the retention trimmer.
3. Warehouse: DuckDB or PostgreSQL, migrated.
4. Agents: those listed in ``agents.run``, as supervised tasks.

On SIGTERM aiohttp stops accepting connections and lets in-flight requests finish (up to
``http.shutdown_timeout``); then the agents finish the batch in hand and stop, the warehouse
closes (DuckDB's writer finishes its queue), the publisher flushes what it holds, the client
closes and the embedded redis-server shuts down (SIGTERM: it fsyncs its append-only file). A
request answered 2xx had its events in Redis before the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from channels import adapters
from gateway import keys as K
from gateway.agents import AgentContext
from gateway.agents.pool import AgentPool, build
from gateway.bus import Bus
from gateway.config import Config
from gateway.erp import web as erp_web
from gateway.errors import BusUnavailable
from gateway.publisher import Publisher
from gateway.redis import EmbeddedRedis, check_version, connect
from gateway.web import customers, dashboard, health, ingest, olap
from gateway.web.auth import admin_token
from gateway.web.errors import error_middleware, quiet_client_errors
from gateway.web.olap import warehouse_ctx
from gateway.web.state import (
    ADMIN_TOKEN,
    AGENTS,
    BUS,
    CONFIG,
    COUNTERS,
    EMBEDDED,
    PUBLISHER,
    REDIS,
    WAREHOUSE,
    Counters,
)

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    quiet_client_errors()
    app = web.Application(client_max_size=config.http.max_body, middlewares=[error_middleware])
    app[CONFIG] = config
    app[ADMIN_TOKEN] = admin_token(config)
    app[COUNTERS] = Counters()
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(bus_ctx)
    app.cleanup_ctx.append(warehouse_ctx)
    app.cleanup_ctx.append(agents_ctx)
    health.setup(app)
    ingest.setup(app)
    dashboard.setup(app)
    customers.setup(app)
    olap.setup(app)
    erp_web.setup(app)
    for adapter in adapters():
        adapter.setup(app)
    return app


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    timeout = config.bus.block + config.redis.timeout  # a blocking read must outlast its block
    if config.redis.url.is_set:
        url = config.redis.url.get()
    else:
        server = EmbeddedRedis(config.data_dir / "redis", appendfsync=config.redis.appendfsync)
        await server.start()
        app[EMBEDDED] = server
        url = server.url
    client = connect(url, timeout=timeout)
    try:
        version = await check_version(client)
        log.info("redis %s at %s", version, url.split("@")[-1])
    except Exception as exc:  # not up yet is fine: ingest answers 503 and recovers by itself
        log.warning("redis at %s is not answering yet: %s", url.split("@")[-1], exc)
    app[REDIS] = client
    try:
        yield
    finally:
        await client.aclose()
        if EMBEDDED in app:
            await app[EMBEDDED].stop()


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    bus = Bus(app[REDIS], K.Keys(config.redis.prefix), config.bus)
    publisher = Publisher(bus, timeout=config.redis.timeout)
    publisher.start()
    app[BUS], app[PUBLISHER] = bus, publisher
    trimmer = asyncio.create_task(_trim_forever(bus), name="bus-trim")
    yield
    trimmer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await trimmer
    await publisher.close()


async def _trim_forever(bus: Bus) -> None:
    while True:
        await asyncio.sleep(bus.settings.trim_interval)
        for stream in K.STREAMS:
            try:
                removed = await bus.trim(stream)
            except BusUnavailable as exc:
                log.warning("trim %s: %s", stream, exc)
                continue
            if removed:
                log.info("trimmed %d entries from %s", removed, stream)


async def agents_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    ctx = AgentContext(config, app[REDIS], app[BUS].keys, app[BUS], app.get(WAREHOUSE))
    pool = AgentPool(build(config.agents.run, ctx))
    pool.start()
    app[AGENTS] = pool
    yield
    await pool.stop(grace=config.http.shutdown_timeout)
