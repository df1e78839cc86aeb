"""What the benchmarks share: a free port, ``touchpoint serve`` in a process of its own, the
events an embedded Redis holds, deleting a run's keys (not a benchmark itself)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from gateway.events import unpack
from gateway.keys import ENTRY_FIELD, EVENTS, Keys
from gateway.redis import socket_path

ROOT = Path(__file__).resolve().parent.parent


async def delete_keys(client: Any, prefix: str) -> None:
    """Delete every key under ``prefix`` (an async redis client), a thousand at a time."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(config: Path, port: int) -> Iterator[str]:
    """``touchpoint serve --config config`` until it is ready; SIGTERM on the way out."""
    args = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
    proc = subprocess.Popen(args, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the gateway did not become ready") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def events_in_bus(data: Path) -> int:
    """Events on the ``events`` stream of the embedded Redis under ``data/var``."""
    client = redis.Redis(unix_socket_path=str(socket_path(data / "var" / "redis")))
    rows: Any = client.xrange(Keys("tp").stream(EVENTS))
    client.close()
    return sum(len(unpack(fields[ENTRY_FIELD])) for _, fields in rows)
