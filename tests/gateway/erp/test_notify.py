"""``POST /v1/erp/notify``: signed requests only, queued on the erp agent's stream and synced
by the agent; stale stock as ``/readyz``, the dashboard and the push engine see it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.agents import AGENTS, AgentContext
from gateway.agents.erp import ErpAgent
from gateway.agents.runtime import Agent, Backoff
from gateway.config import Config, ErpConfig
from gateway.erp import open_connector, stock
from gateway.erp.notify import HEADER, check_signature, signature
from gateway.erp.sync import SYNCED, ErpSync
from gateway.keys import ERP
from gateway.web.app import create_app
from gateway.web.state import ADMIN_TOKEN, BUS, REDIS, WAREHOUSE
from tests.helpers import eventually

Client = TestClient[web.Request, web.Application]
KEY = "s3cret-notify-key"


@pytest.fixture
def config(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str, warehouse_section: str
) -> Config:
    return make_config(
        service_redis_url,
        prefix,
        warehouse_section,
        "[agents]\nrun = []\n[bus]\nblock = 0.02",
        erp__files__seed_demo="true",
        erp__notify_key=KEY,
    )


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> Client:
    client: Client = await aiohttp_client(create_app(config))
    return client


def signed(body: bytes, key: str = KEY, at: float | None = None) -> dict[str, str]:
    return {HEADER: signature(key, int(time.time() if at is None else at), body)}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "header required"),
        ("v1=abc", "must be t=<unix seconds>"),
        ("t=1000,v1=abc", "outside the allowed window"),
        ("t=2000,v1=abc", "bad signature"),
        (signature("other key", 2000, b"{}"), "bad signature"),
        (signature(KEY, 2000, b"{ }"), "bad signature"),  # another body
        ("t=²⁰⁰⁰,v1=abc", "must be t=<unix seconds>"),  # digits, but not ASCII ones
        ("t=2000,v1=ébc", "bad signature"),  # hmac.compare_digest refuses non-ASCII text
        ("t=1" + "0" * 400 + ",v1=ab", "must be t=<unix seconds>"),  # once an OverflowError
        ("t=" + "9" * 5000 + ",v1=ab", "must be t=<unix seconds>"),  # int() refuses it
    ],
)
def test_refused_signatures(header: str | None, reason: str) -> None:
    refused = check_signature(KEY, header, b"{}", 300.0, now=2000.0)
    assert refused is not None and reason in refused


def test_a_good_signature() -> None:
    assert check_signature(KEY, signature(KEY, 2000, b"{}"), b"{}", 300.0, now=2100.0) is None


async def test_a_notify_is_queued_then_synced_by_the_agent(client: Client, config: Config) -> None:
    body = json.dumps({"entities": ["stock", "stores"]}).encode()
    response = await client.post("/v1/erp/notify", data=body)
    assert response.status == 401
    assert "header required" in (await response.json())["error"]
    late = signed(body, at=time.time() - 600)
    assert (await client.post("/v1/erp/notify", data=body, headers=late)).status == 401
    bad = b'{"entities": ["planets"]}'
    response = await client.post("/v1/erp/notify", data=bad, headers=signed(bad))
    assert response.status == 400 and "planets" in (await response.json())["error"]

    response = await client.post("/v1/erp/notify", data=body, headers=signed(body))
    assert response.status == 202
    answer = await response.json()
    assert answer["queued"] == ["stock", "stores"] and answer["id"]

    app = client.app
    redis, keys = app[REDIS], app[BUS].keys
    assert await stock.status(redis, keys) == {}  # queued, not run: nothing synced yet
    ctx = AgentContext(config, redis, keys, app[BUS], app[WAREHOUSE])
    handler = AGENTS["erp"].make(ctx)
    assert isinstance(handler, ErpAgent)
    handler.sync.next_due = dict.fromkeys(SYNCED, float("inf"))  # no tick syncs: only the asked
    agent = Agent("erp", handler, app[BUS], stream=ERP, backoff=Backoff(0.001, 0.01))
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: agent.stats.acked >= 1)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
    assert set(await stock.status(redis, keys)) == {"stock", "stores"}  # not products
    assert await stock.in_stock(redis, keys, "SKU-1001", "store-1")


async def test_notify_is_off_without_a_key(
    aiohttp_client: Any, make_config: Callable[..., Config]
) -> None:
    client: Client = await aiohttp_client(create_app(make_config("", "tp", "[agents]\nrun = []")))
    response = await client.post("/v1/erp/notify", data=b"{}", headers=signed(b"{}"))
    assert response.status == 404
    assert "erp.notify_key" in (await response.json())["error"]


async def test_stale_stock_is_shown_and_skipped_per_policy(client: Client, config: Config) -> None:
    app = client.app
    redis, keys = app[REDIS], app[BUS].keys
    connector = open_connector(config)
    syncer = ErpSync(connector, app[WAREHOUSE], redis, keys, app[BUS], config.erp)
    skip, trust = config.erp, ErpConfig(stale_stock="last_known")
    assert not await stock.sellable(redis, keys, "SKU-1001", "store-1", trust)  # never synced
    await syncer.sync("stock")

    assert await stock.sellable(redis, keys, "SKU-1001", "store-1", skip)
    assert not await stock.sellable(redis, keys, "SKU-1001", "store-2", skip)  # 0 there
    ready = await (await client.get("/readyz")).json()
    assert ready["erp"]["stock"]["stale"] is False

    # Not confirmed for longer than erp.stale_after: stale, though the last sync went well.
    old = time.time() - skip.stale_after - 60
    await redis.hset(keys.erp_status(), "stock.synced_at", repr(old))
    assert await stock.is_stale(redis, keys, "stock", skip.stale_after)
    assert not await stock.sellable(redis, keys, "SKU-1001", "store-1", skip)
    assert await stock.sellable(redis, keys, "SKU-1001", "store-1", trust)
    ready = await (await client.get("/readyz")).json()
    assert ready["erp"]["stock"]["stale"] is True and ready["ready"] is True
    headers = {"Authorization": f"Bearer {app[ADMIN_TOKEN]}"}
    page = await client.get("/dashboard/agents", headers=headers)
    assert page.status == 200
    text = await page.text()
    assert "ERP syncs" in text and '<td class="bad">stale</td>' in text
