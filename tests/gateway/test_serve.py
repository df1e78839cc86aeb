"""`touchpoint serve` as a real process: SIGTERM drains without losing an acknowledged event,
and SIGKILL of the gateway leaves no orphan redis-server behind."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway import keys as K
from gateway.events import unpack
from gateway.redis import socket_path
from tests.conftest import ROOT
from tests.helpers import alive, eventually

AUTH = {"Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode()}


def track(message_id: str) -> dict[str, str]:
    return {"type": "track", "event": "X", "anonymousId": "a", "messageId": message_id}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    """A `touchpoint serve` child process with its own config file."""

    def __init__(self, tmp_path: Path, redis_url: str = "", prefix: str = "tp") -> None:
        self.port = free_port()
        self.data = tmp_path / "var"
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(
            f'[http]\nport = {self.port}\nshutdown_timeout = 10.0\n[data]\ndir = "{self.data}"\n'
            f'[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\n'
            '[sites.demo]\nwrite_key = "demo-write-key"\n'
            "[erp.files]\nseed_demo = false\n"  # no Stock Changed events among the test's own
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config),
            cwd=ROOT, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await eventually(lambda: self._ready(session), within=30)

    async def _ready(self, session: aiohttp.ClientSession) -> bool:
        assert self.proc and self.proc.returncode is None, "gateway exited"
        try:
            async with session.get(self.url + "/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def stored_ids(client: aioredis.Redis, prefix: str) -> set[str]:
    rows = await client.xrange(K.Keys(prefix).stream(K.EVENTS))
    return {e.event_id for _, fields in rows for e in unpack(fields[K.ENTRY_FIELD])}


async def test_sigterm_loses_no_acknowledged_event(
    tmp_path: Path, session: aiohttp.ClientSession, service_redis_url: str, prefix: str
) -> None:
    gateway = Gateway(tmp_path, service_redis_url, prefix)
    await gateway.start(session)
    acknowledged: set[str] = set()
    sent = 0

    async def sender(worker: int) -> None:
        nonlocal sent
        for n in range(10_000):
            ids = [f"w{worker}-{n}-{i}" for i in range(5)]
            batch = [track(m) for m in ids]
            try:
                async with session.post(
                    gateway.url + "/v1/events", data=json.dumps({"batch": batch}), headers=AUTH
                ) as resp:
                    sent += 1
                    if resp.status == 200:
                        acknowledged.update(ids)
            except aiohttp.ClientError:
                return  # the gateway stopped accepting

    senders = [asyncio.create_task(sender(w)) for w in range(8)]
    await eventually(lambda: sent >= 200)
    assert gateway.proc
    gateway.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.proc.wait(), 30) == 0
    await asyncio.gather(*senders)

    client = aioredis.Redis.from_url(service_redis_url)
    try:
        stored = await stored_ids(client, prefix)
    finally:
        await client.aclose()
    assert len(acknowledged) >= 1000
    assert acknowledged <= stored


async def test_sigkilled_gateway_leaves_no_orphan_redis(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    gateway = Gateway(tmp_path)
    await gateway.start(session)
    batch = [track(f"k{i}") for i in range(20)]
    async with session.post(
        gateway.url + "/v1/events", data=json.dumps({"batch": batch}), headers=AUTH
    ) as resp:
        assert resp.status == 200
    redis_pid = int((gateway.data / "redis" / "redis.pid").read_text())
    assert alive(redis_pid)

    assert gateway.proc
    gateway.proc.send_signal(signal.SIGKILL)
    await gateway.proc.wait()
    await eventually(lambda: not alive(redis_pid))

    await gateway.start(session)  # the next start finds a clean slate...
    new_pid = int((gateway.data / "redis" / "redis.pid").read_text())
    assert new_pid != redis_pid
    client = aioredis.Redis.from_url(f"unix://{socket_path(gateway.data / 'redis')}")
    try:  # ...and every acknowledged event from before the kill
        assert await stored_ids(client, "tp") == {f"k{i}" for i in range(20)}
    finally:
        await client.aclose()
        gateway.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(gateway.proc.wait(), 30) == 0
    assert not alive(new_pid)
