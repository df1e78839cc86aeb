"""Small helpers shared by tests: polling a condition, building events, a cuttable TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import Config
from gateway.events import Event
from gateway.web.app import create_app


async def eventually(check: Callable[[], Any], within: float = 20.0, every: float = 0.02) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail after ``within`` s.

    This waits for a condition, it does not guess a duration.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def event(i: int, channel: str = "web", **fields: Any) -> Event:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "event_id": f"e{i}",
        "type": "track",
        "name": "Product Viewed",
        "channel": channel,
        "site": "demo",
        "timestamp": now,
        "received_at": now,
        "anonymous_id": f"a{i % 7}",
        "properties": {"sku": f"SKU-{i % 13}", "price": 9.5},
    }
    values.update(fields)
    return Event(**values)


class Proxy:
    """A TCP proxy to a real server that a test can cut and restore (a network outage)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        for task in pipes:
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()


class LiveGateway:
    """The real app on a loopback port that survives a stop and a start."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> web.Application:
        assert self._runner is not None, "not started"
        return self._runner.app

    async def start(self) -> None:
        runner = web.AppRunner(create_app(self.config), shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def raw_http(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """Send one request as raw bytes (header bytes an HTTP client would refuse or re-encode)
    to 127.0.0.1:``port``: its status and body. ``head`` is the request line and headers,
    CRLF-separated, without the blank line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        writer.write(head + length + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]
