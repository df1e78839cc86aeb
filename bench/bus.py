"""Throughput of the Redis Streams bus (``gateway.bus``), on the embedded and the service Redis.

What it measures, in events per second, each on a fresh ``events`` stream (its keys are deleted
after each measurement; a read decodes the events of the streams that carry them, as the
agents' reads do):

1. single publish: ``Bus.publish(stream, [event])`` awaited one by one;
2. pipelined publish: ``Bus.publish_many`` with chunks of 100 (one XADD per event, one pipeline
   per chunk);
3. packed publish: ``Bus.publish(stream, chunk)``, 100 events in one entry;
4. group commit: ``gateway.bus.Publisher`` (the HTTP ingest's write path) with 200 concurrent
   tasks each publishing one event at a time;
5. consume+ack with one consumer: ``Bus.read`` in batches of ``bus.batch`` (200) then
   ``Bus.ack``, decoding included, over entries of 1 event and over entries of 100 events.

Targets: the embedded Redis (``gateway.redis.EmbeddedRedis`` in a temp dir, appendfsync
"everysec", unix socket) and the service Redis at ``TOUCHPOINT_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``; skipped with a note when it does not answer). Keys live under a
random ``bench-<hex>`` prefix and are deleted after each measurement. Events are built once up
front (a pool of distinct events, reused in turn), so building them is not measured. Each
publish measurement checks the stream length afterwards (not timed).

It prints a markdown table (events/s; progress goes to stderr), the Redis versions, the issue
targets and the command that reproduces the run.

Run from the project root::

    .venv/bin/python bench/bus.py              # 20,000 single publishes, 200,000 for the rest
    .venv/bin/python bench/bus.py --quick      # a tenth of that
    .venv/bin/python bench/bus.py --events N   # N events for all but the single publish
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import keys as K
from gateway.bus import Bus
from gateway.cli import new_loop, tune_gc
from gateway.config import BusConfig, RedisConfig
from gateway.events import Event, pack, unpack
from gateway.keys import Keys
from gateway.publisher import Publisher
from gateway.redis import EmbeddedRedis, connect, find_binary

SERVICE_URL_ENV = "TOUCHPOINT_TEST_REDIS_URL"
DEFAULT_SERVICE_URL = "redis://127.0.0.1:6379/0"
SINGLE_EVENTS = 20_000
BULK_EVENTS = 200_000
QUICK_DIVISOR = 10
CHUNK = 100
PUBLISHER_TASKS = 200
EVENT_POOL = 10_000
SEED_PIPELINE = 1_000
GROUP = "bench"
CONSUMER = "bench-1"
TARGET_PIPELINED = 150_000
TARGET_CONSUME = 50_000


SizeKind = Literal["single", "bulk"]


@dataclass(frozen=True)
class Sizes:
    """Events per measurement: ``single`` for the one-by-one publish, ``bulk`` for the rest."""

    single: int
    bulk: int

    def of(self, kind: SizeKind) -> int:
        return self.single if kind == "single" else self.bulk


@dataclass(frozen=True)
class Run:
    """Events handled in a timed section and how long it took."""

    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


Bench = Callable[[Bus, str, Sequence[Event]], Awaitable[Run]]


@dataclass(frozen=True)
class Scenario:
    label: str
    bench: Bench
    size: SizeKind


@dataclass(frozen=True)
class Column:
    """The figures of one Redis server, or why there are none."""

    name: str
    version: str = ""
    rates: tuple[float, ...] = ()
    note: str = ""


# --- events ----------------------------------------------------------------------------------


def make_event(i: int, now: datetime) -> Event:
    """A realistic web ``track`` event, as the HTTP ingest would put on the bus."""
    sku = f"SKU-{i % 5000:05d}"
    return Event(
        event_id=secrets.token_hex(16),
        type="track",
        channel="web",
        site="demo",
        timestamp=now - timedelta(milliseconds=i % 1000),
        received_at=now,
        name="Product Viewed",
        anonymous_id=f"anon-{i % 20_000:06d}-{secrets.token_hex(4)}",
        properties={
            "product_id": f"prod-{i % 5000}",
            "sku": sku,
            "price": round(9.99 + (i % 300) * 0.5, 2),
            "currency": "EUR",
        },
        context={
            "ip": f"203.0.113.{i % 254 + 1}",
            "userAgent": (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/126.0 Safari/537.36"
            ),
            "page": {
                "url": f"https://shop.example.com/products/{sku.lower()}",
                "path": f"/products/{sku.lower()}",
                "referrer": "https://shop.example.com/",
            },
            "library": {"name": "analytics.js", "version": "4.1.0"},
        },
    )


def make_events(count: int) -> list[Event]:
    """``count`` events, drawn in turn from a pool of distinct ones."""
    now = datetime.now(UTC)
    pool = [make_event(i, now) for i in range(min(count, EVENT_POOL))]
    return [pool[i % len(pool)] for i in range(count)]


def chunks(events: Sequence[Event], size: int) -> list[Sequence[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


# --- the measurements ------------------------------------------------------------------------


async def check_length(bus: Bus, stream: str, entries: int) -> None:
    """Fail loudly when the stream does not hold what was published (not timed)."""
    length = await bus.client.xlen(bus.keys.stream(stream))
    if length != entries:
        raise RuntimeError(f"{stream}: {length} entries in Redis, {entries} published")


async def bench_single(bus: Bus, stream: str, events: Sequence[Event]) -> Run:
    start = time.perf_counter()
    for event in events:
        await bus.publish(stream, [event])
    seconds = time.perf_counter() - start
    await check_length(bus, stream, len(events))
    return Run(len(events), seconds)


async def bench_pipelined(bus: Bus, stream: str, events: Sequence[Event]) -> Run:
    batches = chunks(events, CHUNK)
    start = time.perf_counter()
    for chunk in batches:
        await bus.publish_many(stream, [[event] for event in chunk])
    seconds = time.perf_counter() - start
    await check_length(bus, stream, len(events))
    return Run(len(events), seconds)


async def bench_packed(bus: Bus, stream: str, events: Sequence[Event]) -> Run:
    batches = chunks(events, CHUNK)
    start = time.perf_counter()
    for chunk in batches:
        await bus.publish(stream, chunk)
    seconds = time.perf_counter() - start
    await check_length(bus, stream, len(batches))
    return Run(len(events), seconds)


async def bench_publisher(bus: Bus, stream: str, events: Sequence[Event]) -> Run:
    publisher = Publisher(bus, timeout=RedisConfig().timeout)
    shares = [events[i::PUBLISHER_TASKS] for i in range(PUBLISHER_TASKS)]

    async def produce(share: Sequence[Event]) -> None:
        for event in share:
            await publisher.publish(stream, [event])

    publisher.start()
    try:
        start = time.perf_counter()
        async with asyncio.TaskGroup() as tasks:
            for share in shares:
                tasks.create_task(produce(share))
        seconds = time.perf_counter() - start
    finally:
        await publisher.close()
    await check_length(bus, stream, len(events))
    return Run(publisher.published_events, seconds)


async def bench_consume_single(bus: Bus, stream: str, events: Sequence[Event]) -> Run:
    return await consume(bus, stream, [pack([event]) for event in events])


async def bench_consume_packed(bus: Bus, stream: str, events: Sequence[Event]) -> Run:
    return await consume(bus, stream, [pack(chunk) for chunk in chunks(events, CHUNK)])


async def consume(bus: Bus, stream: str, values: Sequence[bytes]) -> Run:
    """Seed ``values`` as entries (not timed), then read and ack them all with one consumer."""
    for first in range(0, len(values), SEED_PIPELINE):
        await bus.add_packed([(stream, v) for v in values[first : first + SEED_PIPELINE]])
    await bus.ensure_group(stream, GROUP)
    entries = events = 0
    start = time.perf_counter()
    while entries < len(values):
        batch = await bus.read(
            stream, GROUP, CONSUMER, count=bus.settings.batch, block=bus.settings.block
        )
        if not batch:
            raise RuntimeError(f"{stream}: read {entries} of {len(values)} entries, then none")
        await bus.ack(stream, GROUP, [entry.id for entry in batch])
        entries += len(batch)
        events += sum(len(entry.events) for entry in batch)
    took = time.perf_counter() - start
    if events != sum(len(unpack(v)) for v in values):  # not timed
        raise RuntimeError(f"{stream}: read {events} events from {entries} entries")
    return Run(events, took)


SCENARIOS = (
    Scenario("single publish (1 event/XADD, awaited one by one)", bench_single, "single"),
    Scenario(f"pipelined publish (1 event/XADD, {CHUNK} XADD/pipeline)", bench_pipelined, "bulk"),
    Scenario(f"packed publish ({CHUNK} events/XADD)", bench_packed, "bulk"),
    Scenario(
        f"Publisher group commit ({PUBLISHER_TASKS} tasks x 1 event)", bench_publisher, "bulk"
    ),
    Scenario("consume+ack, 1 event/entry (1 consumer)", bench_consume_single, "bulk"),
    Scenario(f"consume+ack, {CHUNK} events/entry (1 consumer)", bench_consume_packed, "bulk"),
)


# --- Redis servers ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def embedded_url() -> AsyncIterator[str]:
    """A private redis-server in a temp dir, as ``touchpoint serve`` runs it without a URL."""
    with tempfile.TemporaryDirectory(prefix="tp-bench-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", appendfsync="everysec")
        await server.start()
        try:
            yield server.url
        finally:
            await server.stop()


async def delete_keys(client: aioredis.Redis, prefix: str) -> None:
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        await client.delete(key)


async def server_version(client: aioredis.Redis) -> str:
    info = await client.info("server")
    return str(info["redis_version"])


async def measure(name: str, url: str, events: Sequence[Event], sizes: Sizes) -> Column:
    """Every scenario against the server at ``url``; keys are deleted after each one."""
    client = connect(url, timeout=5.0)
    prefix = f"bench-{secrets.token_hex(4)}"
    bus = Bus(client, Keys(prefix), BusConfig())
    rates: list[float] = []
    try:
        version = await server_version(client)
        for scenario in SCENARIOS:
            count = sizes.of(scenario.size)
            try:
                run = await scenario.bench(bus, K.EVENTS, events[:count])
            finally:
                await delete_keys(client, prefix)
            rates.append(run.rate)
            print(f"  {name}: {scenario.label}: {run.rate:,.0f} events/s", file=sys.stderr)
    finally:
        await client.aclose()
    return Column(name, version, tuple(rates))


async def reachable(url: str) -> str:
    """Empty when the server at ``url`` answers, else why not."""
    client = connect(url, timeout=2.0)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return ""


async def run_all(sizes: Sizes, service_url: str) -> list[Column]:
    events = make_events(max(sizes.single, sizes.bulk))
    async with embedded_url() as url:
        columns = [await measure("embedded", url, events, sizes)]
    problem = await reachable(service_url)
    if problem:
        print(f"note: service Redis {service_url} skipped: {problem}")
        columns.append(Column("service", note="unreachable"))
    else:
        columns.append(await measure("service", service_url, events, sizes))
    return columns


# --- report ----------------------------------------------------------------------------------


def cell(column: Column, index: int) -> str:
    return f"{column.rates[index]:,.0f}" if column.rates else f"n/a ({column.note})"


def table(columns: Sequence[Column], sizes: Sizes) -> str:
    header = ["measurement (events/s)", *(c.name for c in columns)]
    rows = [header, ["---", *("---:" for _ in columns)]]
    for index, scenario in enumerate(SCENARIOS):
        label = f"{scenario.label}, {sizes.of(scenario.size):,} events"
        rows.append([label, *(cell(c, index) for c in columns)])
    rows.append(["Redis version", *(c.version or "n/a" for c in columns)])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def command(argv: Sequence[str]) -> str:
    env = os.environ.get(SERVICE_URL_ENV)
    prefix = f"{SERVICE_URL_ENV}={shlex.quote(env)} " if env else ""
    return prefix + shlex.join([".venv/bin/python", "bench/bus.py", *argv])


def report(columns: Sequence[Column], sizes: Sizes, service_url: str, loop: str) -> str:
    return "\n".join(
        [
            table(columns, sizes),
            "",
            f"embedded: {find_binary()} on a unix socket, appendonly yes, appendfsync "
            f"everysec; service: {service_url}; event loop: {loop}",
            f"issue targets: >= {TARGET_PIPELINED:,} events/s pipelined publish, "
            f">= {TARGET_CONSUME:,} events/s consume+ack with one consumer",
            "",
            "reproduce (from the project root):",
            f"    {command(sys.argv[1:])}",
        ]
    )


# --- entry point -----------------------------------------------------------------------------


def parse_sizes(argv: Sequence[str] | None = None) -> Sizes:
    parser = argparse.ArgumentParser(description="Throughput of the Redis Streams bus.")
    parser.add_argument("--quick", action="store_true", help=f"divide sizes by {QUICK_DIVISOR}")
    parser.add_argument(
        "--events",
        type=int,
        metavar="N",
        help=f"events for all but single publish ({BULK_EVENTS:,})",
    )
    args = parser.parse_args(argv)
    divisor = QUICK_DIVISOR if args.quick else 1
    if args.events is not None and args.events < 1:
        parser.error("--events must be at least 1")
    return Sizes(SINGLE_EVENTS // divisor, args.events or BULK_EVENTS // divisor)


def main() -> int:
    sizes = parse_sizes()
    service_url = os.environ.get(SERVICE_URL_ENV, DEFAULT_SERVICE_URL)
    tune_gc()  # as `touchpoint serve` and `touchpoint agent` do
    with asyncio.Runner(loop_factory=new_loop) as runner:
        columns = runner.run(run_all(sizes, service_url))
        loop = type(runner.get_loop()).__module__.split(".")[0]
    print(report(columns, sizes, service_url, loop))
    return 0


if __name__ == "__main__":
    sys.exit(main())
