"""Throughput of the collector and the data mart: end to end (the default), or each agent alone.

**End to end** (bus → all agents → warehouse): ``--events`` synthetic shop events (default
200,000) from ``--visitors`` visitors (default 5,000; a few visits each, 30+ minutes apart, so
the sessions agent closes visits and ``sync-sessions`` has work): page views, product views,
cart additions, orders with 1-3 product lines, identifies with user id and e-mail (a few
visitors sign in as the same person on a second device, so identity merges), 2 % bot visitors
and 0.5 % events sent twice with the same ``messageId`` (a client retry, one to three entries
later). They are published up front in time order, ``--per-entry`` events per entry (100, as
``POST /v1/batch`` makes them). Then the collector agent (filter, sessions, identity, profile
and sync in one pass per batch) and sync-sessions (not channel-counts: it only counts into
Redis; ``--agents`` adds it) run in one process as ``touchpoint serve`` runs them by default
(``--agents filter,sessions,identity,profile,sync,sync-sessions`` runs the five agents the
collector stands for instead, each its own consumer group):
:class:`gateway.agents.pool.AgentPool` over :func:`gateway.agents.pool.build`, with an
:class:`~gateway.agents.AgentContext` holding an opened, migrated warehouse and the gateway's
default ``[bus]`` settings (``batch`` = 200 entries per read). Publishing is not timed: the
clock runs from the pool's start until every group has nothing pending or lagging and
``fact_event`` holds every event; events/s = events published / that time. Per agent it also
prints the entries and events it handled, the wall time spent inside its handler (awaits
included) and when its last batch ended. Afterwards ``fact_event`` is checked to hold the
events published minus the duplicates, with the bots flagged, and ``fact_sale`` every order
line. Once on DuckDB (a temp dir) and once on PostgreSQL (``TOUCHPOINT_TEST_DATABASE_URL``,
default the loopback server, in a fresh schema dropped afterwards; skipped with a note when it
does not answer). ``collector.tick_interval`` is an hour, so the idle-session sweep does not
fire at a random point of the run; ``--collector 'KEY = VALUE'`` sets another ``[collector]``
key (``'batch = 200'``). It also prints how long the event loop went without running other
tasks (:class:`Stalls`): what an HTTP request would wait in a ``serve`` running the agents.

**Per agent** (``--per-agent``): filter, sessions, identity and profile each alone on ~84,000
events (``--visitors`` 10,000 visits of ~10 events, 20 per entry), until its group is drained.

**Steps** (``--steps``): the end-to-end traffic through the collector agent's steps one after
the other, ``bus.batch`` entries at a time, no bus and no pipelining: per step, wall time (its
waits on Redis included), this thread's CPU time and the Redis server's (``INFO cpu``, read
between the steps), per event; then the profiles of every customer touched are read and made
into ``dim_customer`` rows, as the sync agent's tick does (time per customer).

Redis: the service at ``TOUCHPOINT_TEST_REDIS_URL`` (default the loopback Redis); keys under a
random ``bench-<hex>`` prefix per run, deleted afterwards.

Run from the project root::

    .venv/bin/python bench/collector.py                        # end to end, DuckDB + PostgreSQL
    .venv/bin/python bench/collector.py --engines duckdb --events 50000
    .venv/bin/python bench/collector.py --per-agent            # each collector agent alone
    .venv/bin/python bench/collector.py --steps                # its steps one after the other
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import random
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from serving import delete_keys

from gateway import config as configuration
from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.agents.facts import fact_records
from gateway.agents.filter import Filter
from gateway.agents.identity import Identity
from gateway.agents.pool import AgentPool, build
from gateway.agents.profile import Profiles
from gateway.agents.runtime import Agent
from gateway.agents.sessions import Sessions
from gateway.agents.sync import customer_rows
from gateway.bus import Bus, Entry
from gateway.cli import new_loop, tune_gc
from gateway.compiled import MODULES, in_use, module_name
from gateway.datamart.profiles import get_profiles
from gateway.events import Event, pack, unpack
from gateway.keys import Keys
from gateway.redis import connect
from gateway.warehouse import Warehouse, open_warehouse

URL = os.environ.get("TOUCHPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "TOUCHPOINT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CHAIN = ("filter", "sessions", "identity", "profile")
PIPELINE = ("collector", "sync-sessions")
TARGET = 30_000
UA = {"browser": "Chrome", "os": "Linux", "deviceType": "desktop", "bot": False}
BOT_UA = {"browser": "Googlebot", "os": "Other", "deviceType": "other", "bot": True}
SITE_CONFIG = '[sites.demo]\nwrite_key = "demo-write-key"\n'


def traffic(visitors: int, seed: int = 7) -> list[Event]:
    """One visit of ~10 events per visitor (the per-agent measurement)."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=2)
    events: list[Event] = []
    for v in range(visitors):
        at = start + timedelta(seconds=rng.uniform(0, 3600))
        bot = rng.random() < 0.02
        context = {"userAgentData": UA, "page": {"url": "https://shop.example/", "referrer": ""}}
        if bot:
            context = {**context, "bot": True}
        common = {"channel": "web", "site": "demo", "anonymous_id": f"v{v}", "context": context}
        steps: list[tuple[str, str | None, dict[str, Any], dict[str, Any]]] = []
        for _ in range(rng.randint(4, 12)):
            product = f"P{rng.randint(1, 500)}"
            kind = rng.random()
            if kind < 0.4:
                steps.append(("page", None, {"url": f"https://shop.example/p/{product}"}, {}))
            elif kind < 0.8:
                viewed = {"product_id": product, "category": f"cat{int(product[1:]) % 20}"}
                steps.append(("track", "Product Viewed", viewed, {}))
            else:
                steps.append(("track", "Product Added", {"product_id": product, "price": 9.5}, {}))
        if rng.random() < 0.33:
            signed = {"email": f"user{v % (visitors // 2 + 1)}@example.com", "name": f"U{v}"}
            steps.append(("identify", None, {}, signed))
            if rng.random() < 0.5:
                products = [{"product_id": "P1", "price": 20.0, "quantity": 2, "category": "cat1"}]
                steps.append(("track", "Order Completed", {"products": products}, {}))
        for n, (type_, name, props, traits) in enumerate(steps):
            at += timedelta(seconds=rng.uniform(5, 90))
            events.append(
                Event(
                    event_id=f"v{v}-{n}",
                    type=type_,  # type: ignore[arg-type]
                    name=name,
                    timestamp=at,
                    received_at=at,
                    properties=props,
                    traits=traits,
                    **common,  # type: ignore[arg-type]
                )
            )
    events.sort(key=lambda e: e.timestamp)
    return events


# --- end to end: the traffic ---------------------------------------------------------------------


@dataclass
class Shop:
    """Generated traffic and what the warehouse must hold once it is through."""

    entries: list[list[Event]]
    published: int = 0
    duplicates: int = 0
    bot_events: int = 0
    sale_lines: int = 0
    visitors: int = 0


REFERRERS = ("", "", "https://www.google.com/", "https://www.facebook.com/", "https://t.co/x")
#: Gap between the starts of a visitor's visits: more than the 30-minute session timeout.
VISIT_SLOT = timedelta(minutes=75)


def shop_traffic(total: int, visitors: int, per_entry: int, seed: int = 11) -> Shop:
    """``total`` events (duplicates included) from ``visitors`` visitors, packed in entries."""
    rng = random.Random(seed)
    slots = max(1, -(-total // (visitors * 10)))  # ~10 events a visit
    start = datetime.now(UTC) - VISIT_SLOT * (slots + 1)
    shop = Shop(entries=[], visitors=visitors)
    events: list[tuple[Event, bool, int]] = []  # event, is a bot's, order lines
    offsets = [timedelta(seconds=rng.uniform(0, 1800)) for _ in range(visitors)]
    bots = {v for v in range(visitors) if rng.random() < 0.02}
    #: Visitor → (user id, email) once signed in; 1 % sign in as the previous visitor.
    people: dict[int, tuple[str, str]] = {}
    unique = total - int(total * 0.005)
    slot = 0
    while len(events) < unique:
        for v in range(visitors):
            at = start + VISIT_SLOT * slot + offsets[v] + timedelta(seconds=rng.uniform(0, 600))
            made = visit(rng, v, slot, at, v in bots, people)
            events += [(event, v in bots, lines) for event, lines in made]
        slot += 1
    events = events[:unique]
    events.sort(key=lambda item: item[0].timestamp)
    shop.bot_events = sum(bot for _, bot, _ in events)
    shop.sale_lines = sum(lines for _, _, lines in events)
    stream = [event for event, _, _ in events]
    for _ in range(total - unique):  # a client retry: the same message one to three entries on
        i = rng.randrange(len(stream))
        stream.insert(min(len(stream), i + per_entry * rng.randint(1, 3)), stream[i])
    shop.published, shop.duplicates = len(stream), total - unique
    shop.entries = [stream[i : i + per_entry] for i in range(0, len(stream), per_entry)]
    return shop


def visit(
    rng: random.Random,
    v: int,
    slot: int,
    at: datetime,
    bot: bool,
    people: dict[int, tuple[str, str]],
) -> list[tuple[Event, int]]:
    """One visit: ``(event, order lines)`` in time order."""
    referrer = rng.choice(REFERRERS)
    landing = "https://shop.example/"
    if not bot and rng.random() < 0.1:
        landing += "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
    agent = BOT_UA if bot else UA
    steps: list[tuple[str, str | None, dict[str, Any], dict[str, Any]]] = [
        ("page", None, {"path": "/", "title": "Shop"}, {})
    ]
    for _ in range(rng.randint(3, 15)):
        product = rng.randint(1, 500)
        item = {
            "product_id": f"P{product}",
            "sku": f"SKU-{product}",
            "category": f"cat{product % 20}",
            "price": round(5 + product % 50 * 1.5, 2),
        }
        kind = rng.random()
        if bot or kind < 0.4:
            steps.append(("page", None, {"path": f"/p/{product}", "title": f"P{product}"}, {}))
        elif kind < 0.85:
            steps.append(("track", "Product Viewed", item, {}))
        else:
            steps.append(("track", "Product Added", {**item, "quantity": 1}, {}))
    signed_in = v in people  # from an earlier visit
    if not bot and (signed_in or rng.random() < 0.1):
        if v not in people:
            same = v - 1 in people and rng.random() < 0.01  # a second device
            people[v] = people[v - 1] if same else (f"u{v}", f"user{v}@example.com")
        steps.append(("identify", None, {}, {"email": people[v][1], "name": f"User {v}"}))
        if rng.random() < 0.4:
            products: list[dict[str, Any]] = [
                {
                    "product_id": f"P{p}",
                    "sku": f"SKU-{p}",
                    "category": f"cat{p % 20}",
                    "price": 20.0,
                    "quantity": rng.randint(1, 3),
                }
                for p in rng.sample(range(1, 501), rng.randint(1, 3))
            ]
            revenue = sum(p["price"] * p["quantity"] for p in products)
            order = {
                "order_id": f"o{v}-{slot}",
                "revenue": revenue,
                "currency": "EUR",
                "products": products,
            }
            steps.append(("track", "Order Completed", order, {}))
    out = []
    for n, (type_, name, props, traits) in enumerate(steps):
        at += timedelta(seconds=rng.uniform(5, 60))
        path = props.get("path", f"/p/{str(props.get('product_id', 'P0'))[1:]}")
        url = landing if n == 0 else f"https://shop.example{path}"
        context = {
            "userAgentData": agent,
            "locale": "fr-FR",
            "ip": "203.0.113.0",
            "page": {"url": url, "path": path, "referrer": referrer if n == 0 else ""},
        }
        signed_in = signed_in or type_ == "identify"
        event = Event(
            event_id=f"m-{v}-{slot}-{n}",  # the client's messageId
            type=type_,  # type: ignore[arg-type]
            name=name,
            channel="web",
            site="demo",
            timestamp=at,
            received_at=at + timedelta(milliseconds=rng.randint(20, 400)),
            anonymous_id=f"a{v}",
            user_id=people[v][0] if signed_in else None,
            properties=props,
            traits=traits,
            context=context,
        )
        out.append((event, len(props["products"]) if name == "Order Completed" else 0))
    return out


# --- end to end: the run -------------------------------------------------------------------------


class Timed:
    """A handler that adds up the wall time spent in it; ``tick`` and the rest pass through, so
    the runtime still sees a :class:`~gateway.agents.runtime.Ticking` handler as one."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.batches = 0

    async def __call__(self, entries: Sequence[Entry]) -> None:
        began = time.perf_counter()
        try:
            await self.inner(entries)
        finally:
            self.seconds += time.perf_counter() - began
            self.batches += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class AgentFigures:
    name: str
    entries: int
    events: int
    in_handler: float
    done_at: float
    errors: int


@dataclass
class Run:
    engine: str
    seconds: float
    published: int
    #: CPU seconds of the whole process, and of the thread running the event loop (every
    #: agent's Python but the warehouse writer's).
    cpu: float = 0.0
    loop_cpu: float = 0.0
    checks: list[tuple[str, bool]] = field(default_factory=list)
    agents: list[AgentFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.published / self.seconds


class Stalls:
    """How long the event loop went without running other tasks: a probe that asks to wake
    every 10 ms records how late it woke (what an HTTP request to a ``serve`` running the
    agents in-process would wait on top of its own work)."""

    TICK = 0.01

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(self.TICK)
            self.late.append(loop.time() - began - self.TICK)

    def summary(self) -> str:
        late = sorted(self.late) or [0.0]
        p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
        return (
            f"event loop stalls: longest {late[-1] * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms, "
            f"{sum(x >= 0.1 for x in late):,} of 100 ms or more (a 10 ms probe, woken late)"
        )


async def drained(bus: Bus, stream: str, group: str) -> bool:
    key = bus.keys.stream(stream)
    for info in await bus.client.xinfo_groups(key):
        if info["name"] in (group, group.encode()):
            return int(info["pending"]) == 0 and await bus._lag(key, info) == 0
    return False


async def until_drained(bus: Bus, stream: str, group: str) -> None:
    """Poll the group (every 5 ms) until it has nothing pending or lagging."""
    for _ in itertools.count():
        if await drained(bus, stream, group):
            return
        await asyncio.sleep(0.005)


COUNT = "SELECT count(*) AS n FROM"


async def stream_bytes(client: Any, key: str) -> int:
    """What a stream takes in Redis, counted exactly (``MEMORY USAGE ... SAMPLES 0``)."""
    return int(await client.memory_usage(key, samples=0) or 0)


async def count(warehouse: Warehouse, sql: str) -> int:
    return int((await warehouse.fetch(sql))[0]["n"])


async def until_loaded(
    bus: Bus, warehouse: Warehouse, agents: Sequence[Agent], expected: int
) -> None:
    """Poll (every 20 ms) until every group is drained and ``fact_event`` has ``expected`` rows.

    Fails when an agent dead-letters entries: their events can never reach the warehouse."""
    while True:
        if lost := [f"{a.name}: {a.stats.last_error}" for a in agents if a.stats.dead_lettered]:
            raise RuntimeError(f"entries dead-lettered, the run cannot finish ({'; '.join(lost)})")
        if all([await drained(bus, a.stream, a.name) for a in agents]) and (
            await count(warehouse, f"{COUNT} fact_event") >= expected
        ):
            return
        await asyncio.sleep(0.02)


async def end_to_end(
    engine: str,
    shop: Shop,
    names: Sequence[str],
    warehouse_section: str,
    data_dir: str,
    collector: Sequence[str] = (),
) -> Run:
    prefix = f"bench-{secrets.token_hex(4)}"
    settings = "".join(f"{line}\n" for line in collector)
    config = configuration.loads(
        f'{SITE_CONFIG}[data]\ndir = "{data_dir}"\n[collector]\ntick_interval = 3600.0\n'
        f"{settings}{warehouse_section}\n",
        env={},
    )
    client = connect(URL, timeout=config.bus.block + config.redis.timeout)
    bus = Bus(client, Keys(prefix), config.bus)
    warehouse = await open_warehouse(config)
    try:
        await warehouse.migrate()
        agents = build(names, AgentContext(config, client, bus.keys, bus, warehouse))
        for agent in agents:
            await bus.ensure_group(agent.stream, agent.name)
        # Published as the ingest of another process would: the filter decodes every event.
        producer = Bus(client, bus.keys, config.bus)
        for i in range(0, len(shop.entries), 500):
            await producer.publish_many(K.EVENTS, shop.entries[i : i + 500])
        timed = {agent.name: Timed(agent.handler) for agent in agents}
        for agent in agents:
            agent.handler = timed[agent.name]
        pool = AgentPool(agents)
        expected = shop.published - shop.duplicates
        stalls = Stalls()
        began, wall = time.perf_counter(), time.time()
        cpu, loop_cpu = time.process_time(), time.thread_time()
        pool.start()
        stalls.start()
        try:
            await asyncio.wait_for(until_loaded(bus, warehouse, agents, expected), timeout=900)
        finally:
            took = time.perf_counter() - began
            cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
            await stalls.stop()
            await pool.stop()
        run = Run(engine, took, shop.published, cpu=cpu, loop_cpu=loop_cpu)
        run.notes.append(stalls.summary())
        for agent in agents:
            s = agent.stats
            run.agents.append(
                AgentFigures(
                    agent.name,
                    s.entries,
                    s.events,
                    timed[agent.name].seconds,
                    s.last_batch_at - wall if s.last_batch_at else 0.0,
                    s.errors,
                )
            )
        await verify(run, warehouse, shop, timed)
        held = {name: await stream_bytes(client, bus.keys.stream(name)) for name in K.STREAMS}
        run.notes.append(
            "Redis memory of the bus streams after the run (kept for `bus.retention`): "
            + ", ".join(f"{name} {size / 2**20:,.1f} MiB" for name, size in held.items() if size)
            + f"; {sum(held.values()) / 2**20:,.1f} MiB in all"
        )
        return run
    finally:
        await warehouse.close()
        await delete_keys(client, prefix)
        await client.aclose()


async def verify(run: Run, warehouse: Warehouse, shop: Shop, timed: dict[str, Timed]) -> None:
    """What the warehouse and the filter hold after the run, against what was published."""
    unique = shop.published - shop.duplicates
    events = await count(warehouse, f"{COUNT} fact_event")
    bots = await count(warehouse, f"{COUNT} fact_event WHERE is_bot")
    sales = await count(warehouse, f"{COUNT} fact_sale")
    run.checks = [
        (
            f"fact_event {events:,} = {shop.published:,} published - {shop.duplicates:,} "
            f"duplicates",
            events == unique,
        ),
        (f"bot events flagged {bots:,} = {shop.bot_events:,} sent", bots == shop.bot_events),
        (f"fact_sale {sales:,} = {shop.sale_lines:,} order lines", sales == shop.sale_lines),
    ]
    screened = timed["filter"].inner if "filter" in timed else None
    if "collector" in timed:
        screened = timed["collector"].inner.filter
    if screened is not None:
        dropped = screened.stats.duplicates
        run.checks.append((f"filter dropped {dropped:,} duplicates", dropped == shop.duplicates))
    known = await count(warehouse, f"{COUNT} fact_event WHERE customer_id IS NOT NULL")
    customers = await count(warehouse, f"{COUNT} dim_customer")
    merged = await count(warehouse, f"{COUNT} dim_customer WHERE merged_into IS NOT NULL")
    sessions = await count(warehouse, f"{COUNT} fact_session")
    run.notes.append(
        f"{known:,} events with a customer, {customers:,} dim_customer rows ({merged:,} merged), "
        f"{sessions:,} fact_session rows (visits ended by a later one; the last visit of each "
        "visitor stays open until the idle sweep)"
    )


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections work in ``schema`` (as tests/gateway/warehouse/conftest.py)."""
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


async def on_server(sql: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(DATABASE_URL, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def postgres_version() -> str:
    import asyncpg

    connection = await asyncpg.connect(DATABASE_URL, timeout=10)
    try:
        return str(await connection.fetchval("SHOW server_version")).split()[0]
    finally:
        await connection.close()


async def run_engines(args: argparse.Namespace) -> list[Run | str]:
    names = args.agents.split(",")
    shop = shop_traffic(args.events, args.visitors, args.per_entry)
    print(
        f"{shop.published:,} events ({shop.duplicates:,} duplicates, {shop.bot_events:,} from "
        f"bots, {shop.sale_lines:,} order lines) from {shop.visitors:,} visitors in "
        f"{len(shop.entries):,} entries of {args.per_entry}",
        file=sys.stderr,
    )
    gc.freeze()  # the gateway does not hold the traffic: keep it out of the collections
    results: list[Run | str] = []
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
            if engine == "duckdb":
                section = '[warehouse]\nengine = "duckdb"'
                run = await end_to_end("DuckDB", shop, names, section, tmp, args.collector)
            else:
                try:
                    label = f"PostgreSQL {await postgres_version()}"
                except Exception as exc:  # refused, no such host or database, bad password
                    results.append(f"PostgreSQL at {DATABASE_URL} skipped: {exc}")
                    continue
                schema = f"bench_{secrets.token_hex(6)}"
                await on_server(f'CREATE SCHEMA "{schema}"')
                dsn = with_search_path(DATABASE_URL, schema)
                section = f'[warehouse]\nengine = "postgres"\ndsn = "{dsn}"'
                try:
                    run = await end_to_end(label, shop, names, section, tmp, args.collector)
                finally:
                    await on_server(f'DROP SCHEMA "{schema}" CASCADE')
        print(f"  {run.engine}: {run.rate:,.0f} events/s", file=sys.stderr)
        results.append(run)
    return results


def report(results: Sequence[Run | str], argv: Sequence[str]) -> str:
    runs = [r for r in results if isinstance(r, Run)]
    lines = ["| engine | events | seconds | events/s | target |", "|---|---:|---:|---:|---|"]
    for run in runs:
        target = f">= {TARGET:,} events/s" if run.engine == "DuckDB" else ""
        lines.append(
            f"| {run.engine} | {run.published:,} | {run.seconds:.2f} | {run.rate:,.0f} | {target} |"
        )
    for run in runs:
        lines += [
            "",
            f"Per agent on {run.engine} (in handler: wall time inside the handler, "
            "awaits included; done at: its last batch, from the start):",
            "",
            "| agent | entries | events | in handler (s) | done at (s) | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for a in run.agents:
            lines.append(
                f"| {a.name} | {a.entries:,} | {a.events:,} | {a.in_handler:.2f} | "
                f"{a.done_at:.2f} | {a.errors} |"
            )
        lines += [""] + [f"- {'ok' if ok else 'FAILED'}: {text}" for text, ok in run.checks]
        lines += [f"- {note}" for note in run.notes]
        lines.append(
            f"- CPU: {run.cpu:.2f} s for the process, {run.loop_cpu:.2f} s of it on the event "
            f"loop's thread ({run.loop_cpu / run.seconds:.0%} of the run)"
        )
    lines += ["", *[f"note: {r}" for r in results if isinstance(r, str)]]
    lines += [modules_note(), ""]
    lines += ["Reproduce with:", "", f"    {command(argv)}"]
    return "\n".join(lines)


def modules_note() -> str:
    """Whether the collector's hot modules ran compiled (gateway/native.py)."""
    names = [module_name(m) for m in MODULES]
    running = set(in_use())
    if running == set(names):
        return f"The collector's {len(names)} hot modules ran compiled (mypyc: `make native`)."
    source = ", ".join(n for n in names if n not in running)
    return f"Ran from source, not compiled: {source} (`make native` compiles them)."


def command(argv: Sequence[str]) -> str:
    names = ("TOUCHPOINT_TEST_REDIS_URL", "TOUCHPOINT_TEST_DATABASE_URL")
    env = [f"{name}={shlex.quote(os.environ[name])}" for name in names if name in os.environ]
    return " ".join([*env, shlex.join([".venv/bin/python", "bench/collector.py", *argv])])


# --- each agent alone ----------------------------------------------------------------------------


async def per_agent(visitors: int, per_entry: int) -> None:
    prefix = f"bench-{secrets.token_hex(4)}"
    config = configuration.loads(
        f"{SITE_CONFIG}[bus]\nblock = 0.01\nbatch = 200\n[collector]\ntick_interval = 3600.0\n",
        env={},
    )
    client = connect(URL, timeout=10.0)
    bus = Bus(client, Keys(prefix), config.bus)
    ctx = AgentContext(config, client, bus.keys, bus)
    try:
        events = traffic(visitors)
        batches = [events[i : i + per_entry] for i in range(0, len(events), per_entry)]
        for name in CHAIN:
            await bus.ensure_group(AGENTS[name].stream, name)
        for i in range(0, len(batches), 500):
            await bus.publish_many(K.EVENTS, batches[i : i + 500])
        print(f"{len(events):,} events from {visitors:,} visitors, {per_entry} per entry",
              file=sys.stderr)  # fmt: skip
        print("| agent | events/s | seconds |\n|---|---:|---:|")
        for name in CHAIN:
            spec = AGENTS[name]
            agent = Agent(name, spec.make(ctx), bus, stream=spec.stream)
            began = time.perf_counter()
            task = asyncio.create_task(agent.run())
            await until_drained(bus, spec.stream, name)
            took = time.perf_counter() - began
            agent.stop()
            await task
            rate = agent.stats.events / took
            print(f"| {name} | {rate:,.0f} | {took:.2f} |")
    finally:
        await delete_keys(client, prefix)
        await client.aclose()


# --- the collector's steps, one after the other ------------------------------------------------


async def steps(total: int, visitors: int, per_entry: int) -> None:
    """The end-to-end traffic through the collector's steps one after the other, a default
    ``bus.batch`` of entries at a time (no pipelining, so each step's time is its own): per step,
    wall time (its waits on Redis included), CPU time of this thread and of the Redis server,
    per event. ``facts`` builds the warehouse rows only (the load runs on the writer thread)."""
    prefix = f"bench-{secrets.token_hex(4)}"
    config = configuration.loads(f"{SITE_CONFIG}[collector]\ntick_interval = 3600.0\n", env={})
    client = connect(URL, timeout=30.0)
    bus = Bus(client, Keys(prefix), config.bus)
    screen, sessions = Filter(bus, config), Sessions(bus, config)
    identity, profiles = Identity(bus, config), Profiles(bus, config)
    shop = shop_traffic(total, visitors, per_entry)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    redis: dict[str, float] = {}
    customers: set[str] = set()
    try:
        for n in range(0, len(shop.entries), config.bus.batch):
            raw = [pack(events) for events in shop.entries[n : n + config.bus.batch]]
            clock = (time.perf_counter(), time.thread_time(), await redis_cpu(client))

            async def lap(step: str) -> None:
                nonlocal clock
                now = (time.perf_counter(), time.thread_time())
                wall[step] = wall.get(step, 0.0) + now[0] - clock[0]
                cpu[step] = cpu.get(step, 0.0) + now[1] - clock[1]
                server = await redis_cpu(client)  # not timed: after the step's clocks
                redis[step] = redis.get(step, 0.0) + server - clock[2]
                clock = (time.perf_counter(), time.thread_time(), server)

            entries = [Entry(f"0-{i}", unpack(r), raw=r) for i, r in enumerate(raw)]
            await lap("decode")
            screened = await screen.screen(entries)
            await lap("filter")
            batches = await sessions.assign(screened.events)
            await lap("sessions")
            batches = await identity.resolve(batches)
            await lap("identity")
            events = [event for batch in batches for event in batch]
            await profiles.update(events)
            await lap("profile")
            fact_records(events)
            await lap("facts")
            await screen.mark(screened)
            await lap("mark")
            customers.update(e.customer_id for e in events if e.customer_id)
        # what the sync agent's tick does with the customers touched (dim_customer rows)
        clock = (time.perf_counter(), time.thread_time())
        found = await get_profiles(client, bus.keys, sorted(customers))
        snapshots = [row for p in found.values() for row in customer_rows(p, b"k" * 32)]
        snapshot = (time.perf_counter() - clock[0], time.thread_time() - clock[1])
    finally:
        await delete_keys(client, prefix)
        await client.aclose()
    count = shop.published
    print(f"{count:,} events from {visitors:,} visitors, {per_entry} per entry", file=sys.stderr)
    print("| step | wall µs/event | CPU µs/event | Redis CPU µs/event |\n|---|---:|---:|---:|")
    for step, seconds in [*wall.items(), ("all", sum(wall.values()))]:
        spent = [sum(d.values()) if step == "all" else d[step] for d in (cpu, redis)]
        print(
            f"| {step} | {seconds / count * 1e6:.1f} | "
            + " | ".join(f"{x / count * 1e6:.1f}" for x in spent)
            + " |"
        )
    each = [seconds / len(found) * 1e6 for seconds in snapshot]
    print(
        f"\nSnapshot of the {len(found):,} customers touched ({len(snapshots):,} dim_customer "
        f"rows, as the sync tick makes them): {each[0]:.0f} µs wall, {each[1]:.0f} µs CPU each"
    )
    print(f"\n{modules_note()}")


async def redis_cpu(client: Any) -> float:
    """Seconds of CPU the Redis server has used (user + system, all its threads)."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-agent", action="store_true", help="each collector agent alone")
    parser.add_argument(
        "--steps", action="store_true", help="the collector's steps one after the other"
    )
    parser.add_argument("--events", type=int, default=200_000, help="end to end: events sent")
    parser.add_argument("--visitors", type=int, help="default 5,000 (per agent: 10,000)")
    parser.add_argument("--per-entry", type=int, help="default 100 (per agent: 20)")
    parser.add_argument("--engines", default="duckdb,postgres", help="end to end: warehouses")
    parser.add_argument("--agents", default=",".join(PIPELINE), help="end to end: agents run")
    parser.add_argument(
        "--collector",
        action="append",
        default=[],
        metavar="'KEY = VALUE'",
        help="end to end: a [collector] setting (TOML), e.g. 'batch = 200'; repeatable",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.engines.split(",")) - {"duckdb", "postgres"}:
        parser.error(f"--engines: unknown {', '.join(sorted(unknown))} (duckdb, postgres)")
    tune_gc()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        if args.per_agent:
            runner.run(per_agent(args.visitors or 10_000, args.per_entry or 20))
            return 0
        if args.steps:
            runner.run(steps(args.events, args.visitors or 5_000, args.per_entry or 100))
            print(f"\nReproduce with:\n\n    {command(argv)}")
            return 0
        args.visitors, args.per_entry = args.visitors or 5_000, args.per_entry or 100
        results = runner.run(run_engines(args))
    print(report(results, argv))
    failed = any(not ok for r in results if isinstance(r, Run) for _, ok in r.checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
