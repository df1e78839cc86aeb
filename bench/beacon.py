"""Ingest throughput of one gateway process: ``POST /v1/batch`` and ``GET /t.gif``.

Starts ``touchpoint serve`` (one process, embedded Redis in a temp dir, no agents so the
figures are the ingest path alone) and loads it from outside with ``wrk`` (Debian's package):

1. ``POST /v1/batch`` with 50 events per request, each with its own ``messageId`` (so the
   de-duplication check runs for real), write key as HTTP Basic user, as SDKs send it;
2. ``GET /t.gif`` pixel requests (one event each);
3. latency at a steady load: ``POST /v1/batch`` at ``--rate`` requests/s (default 1,000, that is
   50,000 events/s) from an aiohttp client in another process, open loop.

It prints requests/s, events/s and wrk's p50/p99 latency, then checks that every event the
gateway acknowledged (2xx) is in the bus.

**With the collector** (``--with-collector``): the gateway runs ``serve``'s default agents
in-process (the collector on the same event loop as the HTTP server, DuckDB warehouse) and
takes the steady load twice, ``--seconds`` each: once while the collector only keeps up with
it, once right after ``--backlog`` shop events (bench/collector.py's traffic, entries of 100)
were put on the bus, so the collector works through them while requests arrive. It prints the
latency of each phase, how long the backlog took to drain, and checks after shutdown that
``fact_event`` holds every backlog event and every event the gateway acknowledged. Run from the
project root::

    .venv/bin/python bench/beacon.py               # 15 s per load, 16 connections
    .venv/bin/python bench/beacon.py --seconds 5   # shorter
    .venv/bin/python bench/beacon.py --with-collector --rate 100 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from serving import events_in_bus, free_port, serve

from gateway.events import pack
from gateway.keys import ENTRY_FIELD, EVENTS, Keys
from gateway.redis import socket_path

#: Seconds --with-collector waits for the collector to work through its backlog.
DRAIN_LIMIT = 600
AUTH = "Basic " + base64.b64encode(b"demo-write-key:").decode()
BATCH = 50

# wrk builds each request body itself so that every event has a fresh messageId.
BATCH_SCRIPT = """
local n = 0
local head = '{"batch":['
function request()
  n = n + 1
  local items = {}
  for i = 1, %(batch)d do
    items[i] = '{"type":"track","event":"Product Viewed","anonymousId":"a' .. (n %% 997) ..
      '","messageId":"' .. id .. '-' .. n .. '-' .. i ..
      '","properties":{"sku":"SKU-' .. (i %% 13) .. '","price":9.5},' ..
      '"context":{"page":{"path":"/p/' .. i .. '"}}}'
  end
  return wrk.format("POST", nil, nil, head .. table.concat(items, ",") .. ']}')
end
function init(args) id = tostring(os.time()) end
"""
WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_REQUESTS = re.compile(r"(\d+) requests in")
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class Load:
    name: str
    requests: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float
    events_per_request: int

    @property
    def ok(self) -> int:
        return self.requests - self.failed


@contextlib.contextmanager
def gateway(data: Path, port: int, agents: bool = False) -> Iterator[str]:
    """``serve`` with no agents (the ingest path alone), or with its default ones."""
    config = data / "bench.toml"
    config.write_text(
        f'[http]\nport = {port}\n[data]\ndir = "{data / "var"}"\n[log]\nlevel = "warning"\n'
        + ("" if agents else "[agents]\nrun = []\n")
        + '[sites.demo]\nwrite_key = "demo-write-key"\n'
    )
    with serve(config, port) as url:
        yield url


def wrk(url: str, seconds: int, connections: int, script: str | None, name: str, per: int) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script or "")
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-H", f"Authorization: {AUTH}", "-H", "Content-Type: application/json"]  # fmt: skip
    if script:
        args += ["-s", lua.name]
    args.append(url)
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    Path(lua.name).unlink()
    latency = {m[1]: _ms(float(m[2]), m[3]) for m in WRK_LATENCY.finditer(out)}
    failed = int(m[1]) if (m := WRK_NON_2XX.search(out)) else 0
    if m := WRK_ERRORS.search(out):
        failed += sum(int(x) for x in m.groups()[1:])
    requests = int(WRK_REQUESTS.search(out)[1])  # type: ignore[index]
    return Load(name, requests, failed, seconds, latency["50"], latency["99"], per)


def _ms(value: float, unit: str) -> float:
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def open_loop(url: str, rate: int, seconds: int, tag: str = "ol") -> dict[str, float]:
    """Latency at a fixed request rate, from another process (no coordinated omission: each
    request is timed from when it was due, not from when it was sent). ``tag`` starts every
    ``messageId``: runs with different tags send different events."""
    args = [sys.executable, __file__, "--open-loop", url, str(rate), str(seconds), tag]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


async def _open_loop(url: str, rate: int, seconds: int, tag: str) -> dict[str, float]:
    import aiohttp

    total = rate * seconds
    bodies = [
        json.dumps({"batch": [
            {"type": "track", "event": "Product Viewed", "anonymousId": f"a{n % 997}",
             "messageId": f"{tag}-{n}-{i}", "properties": {"sku": f"SKU-{i % 13}", "price": 9.5}}
            for i in range(BATCH)
        ]}).encode()
        for n in range(total)
    ]  # fmt: skip
    latencies: list[float] = []
    failed = 0
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2

        async def one(n: int) -> None:
            nonlocal failed
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            async with session.post(url, data=bodies[n], headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    failed += 1
            latencies.append((loop.time() - due) * 1000)

        await asyncio.gather(*(one(n) for n in range(total)))
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
        "max": latencies[-1],
        "failed": failed,
        "requests": total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--rate", type=int, default=None,
        help="batch requests/s of the steady load (1,000; 100 with --with-collector)",
    )  # fmt: skip
    parser.add_argument(
        "--with-collector", action="store_true",
        help="serve's default agents in-process: the steady load, then again over a backlog",
    )  # fmt: skip
    parser.add_argument(
        "--backlog", type=int, default=200_000, help="events put on the bus (--with-collector)"
    )
    args = parser.parse_args()
    if args.with_collector:
        return with_collector(args.rate or 100, args.seconds, args.backlog)
    args.rate = args.rate or 1000
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    loads: list[Load] = []
    with tempfile.TemporaryDirectory(prefix="tp-beacon-") as tmp:
        data = Path(tmp)
        port = free_port()
        with gateway(data, port) as url:
            script = BATCH_SCRIPT % {"batch": BATCH}
            name = f"POST /v1/batch ({BATCH} events)"
            batch_url = url + "/v1/batch"
            loads.append(wrk(batch_url, args.seconds, args.connections, script, name, BATCH))
            pixel = url + "/t.gif?writeKey=demo-write-key&event=Email%20Opened&anonymousId=a1"
            loads.append(wrk(pixel, args.seconds, args.connections, None, "GET /t.gif", 1))
            steady = open_loop(batch_url, args.rate, args.seconds)
        # The gateway has stopped (SIGTERM); its embedded Redis kept everything on disk.
        stored = asyncio.run(_stored_after_restart(data))
    acknowledged = sum(load.ok * load.events_per_request for load in loads)
    acknowledged += int(steady["requests"] - steady["failed"]) * BATCH
    print("| load | requests/s | events/s | p50 | p99 | failed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for load in loads:
        rate = load.ok / load.seconds
        print(f"| {load.name} | {rate:,.0f} | {rate * load.events_per_request:,.0f} "
              f"| {load.p50_ms:.2f} ms | {load.p99_ms:.2f} ms | {load.failed} |")  # fmt: skip
    print(f"\nat a steady {args.rate:,} batch requests/s ({args.rate * BATCH:,} events/s, open "
          f"loop from another process): p50 {steady['p50']:.2f} ms, p99 {steady['p99']:.2f} ms, "
          f"max {steady['max']:.2f} ms, failed {int(steady['failed'])}")  # fmt: skip
    verdict = "all there" if stored >= acknowledged else f"MISSING {acknowledged - stored:,}"
    print(f"\nacknowledged events: {acknowledged:,}; in the bus after shutdown: {stored:,} "
          f"({verdict})")  # fmt: skip
    print(f"one gateway process, embedded Redis, no agents; wrk -t1 -c{args.connections} "
          f"-d{args.seconds}s on the same 2 cores")  # fmt: skip
    print("targets: >= 50,000 events/s via batch, >= 10,000 pixel requests/s, p99 < 20 ms")
    print("\nreproduce (from the project root):\n    .venv/bin/python bench/beacon.py "
          + shlex.join(sys.argv[1:]))  # fmt: skip
    return 0 if stored >= acknowledged else 1


def with_collector(rate: int, seconds: int, backlog: int) -> int:
    """The steady load with the collector keeping up, then over a backlog (module docstring)."""
    from collector import shop_traffic

    shop = shop_traffic(backlog, max(1, backlog // 40), 100)
    packed = [pack(events) for events in shop.entries]
    phases: list[tuple[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="tp-beacon-") as tmp:
        data = Path(tmp)
        port = free_port()
        with gateway(data, port, agents=True) as url:
            batch_url = url + "/v1/batch"
            steady = open_loop(batch_url, rate, seconds, "keeping-up")
            phases.append(("the collector keeping up", steady))
            client = bus_client(data)
            began = time.monotonic()
            stream = Keys("tp").stream(EVENTS)
            for i in range(0, len(packed), 500):
                pipe = client.pipeline(transaction=False)
                for value in packed[i : i + 500]:
                    pipe.xadd(stream, {ENTRY_FIELD: value})
                pipe.execute()
            loaded = time.monotonic() - began
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                load = pool.submit(open_loop, batch_url, rate, seconds, "over-backlog")
                while not collector_drained(client, stream):  # the backlog, and what came since
                    if time.monotonic() - began > DRAIN_LIMIT:
                        raise RuntimeError(f"the collector did not drain in {DRAIN_LIMIT} s")
                    time.sleep(0.05)
                drained = time.monotonic() - began
                busy = load.result()
            phases.append((f"the collector working through {shop.published:,} events", busy))
            client.close()
        # stopped (SIGTERM): the warehouse file is free to read
        facts = fact_events(data)
    sent = sum(int(p["requests"] - p["failed"]) * BATCH for _, p in phases)
    expected = shop.published - shop.duplicates + sent
    print(f"| steady load: {rate:,} batch requests/s ({rate * BATCH:,} events/s) for {seconds} s, "
          "while | p50 | p99 | max | failed |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, p in phases:
        print(f"| {name} | {p['p50']:.1f} ms | {p['p99']:.1f} ms | {p['max']:.1f} ms "
              f"| {int(p['failed'])} of {int(p['requests']):,} |")  # fmt: skip
    through = shop.published + rate * BATCH * min(drained, seconds)
    print(f"\nbacklog: {shop.published:,} events ({shop.duplicates:,} duplicates) put on the bus "
          f"in {loaded:.1f} s; the collector had nothing pending {drained:.1f} s after the first "
          f"went in (~{through / drained:,.0f} events/s through it, the load's too)")  # fmt: skip
    verdict = "all there" if facts == expected else f"EXPECTED {expected:,}"
    print(f"fact_event after shutdown: {facts:,} rows ({verdict}: backlog less its duplicates, "
          f"plus the {sent:,} events acknowledged over HTTP)")  # fmt: skip
    print("one gateway process (`serve`, default agents, embedded Redis, DuckDB) and the load's "
          "process on the same 2 cores")  # fmt: skip
    print("\nreproduce (from the project root):\n    .venv/bin/python bench/beacon.py "
          + shlex.join(sys.argv[1:]))  # fmt: skip
    return 0 if facts == expected else 1


def bus_client(data: Path) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(socket_path(data / "var" / "redis")))


def collector_drained(client: redis.Redis, stream: str) -> bool:
    groups: Any = client.xinfo_groups(stream)
    for group in groups:
        if group["name"] in ("collector", b"collector"):
            return int(group["pending"]) == 0 and int(group["lag"] or 0) == 0
    return False


def fact_events(data: Path) -> int:
    import duckdb

    con = duckdb.connect(str(data / "var" / "warehouse.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM fact_event").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


async def _stored_after_restart(data: Path) -> int:
    from gateway.redis import EmbeddedRedis

    server = EmbeddedRedis(data / "var" / "redis")
    await server.start()
    try:
        return await asyncio.to_thread(events_in_bus, data)
    finally:
        await server.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--open-loop"]:
        target, rate, seconds, tag = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        print(json.dumps(asyncio.run(_open_loop(target, rate, seconds, tag))))
        sys.exit(0)
    sys.exit(main())
