"""Store-channel throughput of one gateway process: signed till transactions, and import-pos.

Starts ``touchpoint serve`` (one process, embedded Redis in a temp dir, no agents so the figure
is ingest: signature, nonce ``SET NX``, validation, de-duplication, publish) and loads it from
another process: an aiohttp client computing each request's HMAC-SHA256 signature, with
``--concurrency`` requests in flight, every transaction a new receipt. Then ``touchpoint
import-pos`` imports a generated CSV (3 line items per receipt) into the same Redis. It checks
that every acknowledged transaction is in the bus, and prints a table. Run from the root::

    .venv/bin/python bench/pos.py                  # 10 s, 64 in flight, 100,000 CSV rows
    .venv/bin/python bench/pos.py --seconds 5 --rows 30000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import ROOT, events_in_bus, free_port, serve

KEY = "bench-till-key"
TARGET = 3000


def config_text(data: Path, port: int) -> str:
    return (
        f'[http]\nport = {port}\n[data]\ndir = "{data / "var"}"\n[log]\nlevel = "warning"\n'
        '[agents]\nrun = []\n[sites.demo]\nwrite_key = "demo-write-key"\n'
        '[stores.store-1]\nsite = "demo"\n[stores.store-1.terminals.till-1]\n'
        f'keys = ["{KEY}"]\n'
    )


async def _client(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    import aiohttp

    from channels.pos.signing import sign

    path = "/v1/pos/transactions"
    key = KEY.encode()
    run = secrets.token_hex(4)
    done = failed = 0
    n = 0
    deadline = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, failed, n
        while time.monotonic() < deadline:
            n += 1
            body = json.dumps({
                "store": "store-1", "terminal": "till-1", "receipt": f"{run}-{n}",
                "time": "2026-03-02T10:15:00Z", "total": 24.5, "tender": "card",
                "loyalty_card": str(n % 5000),
                "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 10.0, "discount": 1.0},
                          {"sku": "SKU-2", "quantity": 1, "unit_price": 5.5}],
            }).encode()  # fmt: skip
            ts, nonce = str(int(time.time())), secrets.token_hex(12)
            headers = {
                "X-Touchpoint-Terminal": "till-1",
                "X-Touchpoint-Timestamp": ts,
                "X-Touchpoint-Nonce": nonce,
                "X-Touchpoint-Signature": sign(key, "POST", path, ts, nonce, body),
                "Content-Type": "application/json",
            }
            async with session.post(url + path, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    done += 1
                else:
                    failed += 1

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"ok": done, "failed": failed, "seconds": elapsed}


def client(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    args = [sys.executable, __file__, "--client", url, str(seconds), str(concurrency)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def write_csv(path: Path, rows: int) -> None:
    head = "store,terminal,receipt,time,kind,sku,quantity,unit_price,line_discount,total,tender"
    with path.open("w") as out:
        out.write(head + ",loyalty_card\n")
        for r in range(rows):
            receipt = r // 3
            first = r % 3 == 0
            out.write(
                f"store-1,till-1,imp-{receipt},"
                + ("2026-03-02T10:00:00Z,sale," if first else ",,")
                + f"SKU-{r % 97},1,{3 + r % 7}.50,,"
                + ("30.00,card," if first else ",,")
                + (f"{receipt % 5000}\n" if first else "\n")
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--client", nargs=3, metavar=("URL", "SECONDS", "CONCURRENCY"))
    args = parser.parse_args()
    if args.client:
        url, seconds, concurrency = args.client
        print(json.dumps(asyncio.run(_client(url, float(seconds), int(concurrency)))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        port = free_port()
        config = data / "bench.toml"
        config.write_text(config_text(data, port))
        with serve(config, port) as url:
            client(url, 2.0, args.concurrency)  # warm-up
            before = events_in_bus(data)
            live = client(url, args.seconds, args.concurrency)
            in_bus = events_in_bus(data) - before
            export = data / "export.csv"
            write_csv(export, args.rows)
            command = [sys.executable, "-m", "gateway.cli", "import-pos", str(export),
                       "--config", str(config), "--json", "--no-progress"]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            summary = json.loads(out.stdout)
    rate = live["ok"] / live["seconds"]
    print(f"{'load':<44} {'count':>10} {'per second':>12}")
    print(f"{'POST /v1/pos/transactions (signed, 1 txn)':<44} {live['ok']:>10,.0f} {rate:>12,.0f}")
    print(f"{'  failed (non-200)':<44} {live['failed']:>10,.0f}")
    print(f"{'import-pos CSV lines':<44} {summary['lines']:>10,} "
          f"{summary['lines_per_second']:>12,}")  # fmt: skip
    print(f"{'import-pos transactions':<44} {summary['imported']:>10,}")
    print(f"target >= {TARGET:,} transactions/s: {'met' if rate >= TARGET else 'NOT met'}")
    if in_bus != live["ok"]:
        print(f"MISMATCH: {live['ok']} acknowledged, {in_bus} in the bus")
        return 1
    print("every acknowledged transaction is in the bus")
    print("command: .venv/bin/python bench/pos.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
