"""Throughput of the collector's chain (filter → sessions → identity → profile), per agent.

Synthetic shop traffic: ``--visitors`` visitors, each with a visit of ~10 events (page views,
product views, cart additions; a third of them sign in with an e-mail address and some of those
buy), 2 % bots, published up front in entries of ``--per-entry`` events. Then each agent runs
alone (the real ``Agent`` runtime, one member, ``bus.batch`` = 200 entries per read) until its
group has nothing pending or lagging, and the time it took gives its events/s. One agent at a
time, so each figure is that agent's own; in ``serve`` they run concurrently on the same cores.

Target: the service Redis at ``TOUCHPOINT_TEST_REDIS_URL`` (default the loopback Redis), keys
under a random ``bench-<hex>`` prefix deleted afterwards.

Run from the project root::

    .venv/bin/python bench/collector.py                 # 10,000 visitors (~100,000 events)
    .venv/bin/python bench/collector.py --visitors 2000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta

from gateway import config as configuration
from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.agents.runtime import Agent
from gateway.bus import Bus
from gateway.cli import new_loop, tune_gc
from gateway.events import Event
from gateway.keys import Keys
from gateway.redis import connect

URL = os.environ.get("TOUCHPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHAIN = ("filter", "sessions", "identity", "profile")
UA = {"browser": "Chrome", "os": "Linux", "deviceType": "desktop", "bot": False}


def traffic(visitors: int, seed: int = 7) -> list[Event]:
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
        steps: list[tuple[str, str | None, dict[str, object], dict[str, object]]] = []
        for _ in range(rng.randint(4, 12)):
            product = f"P{rng.randint(1, 500)}"
            kind = rng.random()
            if kind < 0.4:
                steps.append(("page", None, {"url": f"https://shop.example/p/{product}"}, {}))
            elif kind < 0.8:
                props = {"product_id": product, "category": f"cat{int(product[1:]) % 20}"}
                steps.append(("track", "Product Viewed", props, {}))
            else:
                steps.append(("track", "Product Added", {"product_id": product, "price": 9.5}, {}))
        if rng.random() < 0.33:
            traits = {"email": f"user{v % (visitors // 2 + 1)}@example.com", "name": f"U{v}"}
            steps.append(("identify", None, {}, traits))
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


async def main(visitors: int, per_entry: int) -> None:
    prefix = f"bench-{secrets.token_hex(4)}"
    config = configuration.loads(
        '[sites.demo]\nwrite_key = "demo-write-key"\n[bus]\nblock = 0.01\nbatch = 200\n'
        "[collector]\ntick_interval = 3600.0\n",
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
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=10_000)
    parser.add_argument("--per-entry", type=int, default=20)
    args = parser.parse_args()
    tune_gc()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(main(args.visitors, args.per_entry))
