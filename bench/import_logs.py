"""Access-log import throughput: ``touchpoint import-logs`` into the bus, beside GoAccess.

Generates a realistic combined log (varied IPs, paths with query strings, ~200 user agents with
some bots, referrers, static assets, 404s; not timed), then times, wall clock, the real command
as a subprocess into the embedded Redis (a temp data dir) and into the service Redis when one
answers, and GoAccess 1.7 parsing the same file. Keys and temp files are removed afterwards.

    .venv/bin/python bench/import_logs.py            # 1,000,000 lines
    .venv/bin/python bench/import_logs.py --quick    # 100,000 lines
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
SERVICE_URL = os.environ.get("TOUCHPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TOUCHPOINT = [sys.executable, "-m", "gateway.cli"]

BROWSERS = [
    "Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.{b}.{p} Safari/537.36",
    "Mozilla/5.0 ({os}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
    "Mozilla/5.0 ({os}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{s}.{p} Safari/605.1.15",
    "Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 "
    "Edg/{v}.0.{b}.{p}",
]
SYSTEMS = [
    "Windows NT 10.0; Win64; x64",
    "Macintosh; Intel Mac OS X 10_15_7",
    "X11; Linux x86_64",
    "Linux; Android 14; Pixel 8",
    "Linux; Android 13; SM-S911B",
    "iPhone; CPU iPhone OS 17_4 like Mac OS X",
    "iPad; CPU OS 16_6 like Mac OS X",
]
BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "curl/8.5.0",
    "python-requests/2.31.0",
    "Mozilla/5.0 (compatible; DuckDuckBot-Https/1.1; https://duckduckgo.com/duckduckbot)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
]
CATEGORIES = ["shoes", "bags", "coats", "hats", "gloves", "socks", "shirts", "scarves"]
STATIC = ["/static/app.{h}.js", "/static/app.{h}.css", "/img/p{n}.jpg", "/favicon.ico"]
REFERRERS = ["https://www.google.com/", "https://www.bing.com/", "https://t.co/x1", "-"]


def user_agents(rng: random.Random) -> list[str]:
    """~190 browser user agents and 10 bots."""
    agents = set()
    while len(agents) < 190:
        template, system = rng.choice(BROWSERS), rng.choice(SYSTEMS)
        agents.add(
            template.format(
                os=system, v=rng.randint(100, 131), b=rng.randint(1000, 6999),
                p=rng.randint(10, 199), s=rng.randint(14, 17),
            )
        )  # fmt: skip
    return sorted(agents) + BOTS


def page(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        color = rng.choice(["red", "blue", "black"])
        return f"/products/{rng.randint(1, 5000)}?color={color}&size={rng.randint(36, 46)}"
    if kind < 0.6:
        return f"/category/{rng.choice(CATEGORIES)}?page={rng.randint(1, 20)}"
    if kind < 0.75:
        return f"/search?q={rng.choice(CATEGORIES)}+{rng.randint(1, 999)}"
    return rng.choice(["/", "/cart", "/checkout", "/account", "/about"])


def generate(path: Path, lines: int, seed: int = 7) -> None:
    """Write ``lines`` combined-format lines: ~25 % static, ~3 % 404, ~5 % bots."""
    rng = random.Random(seed)
    agents = user_agents(rng)
    visitors = [
        (f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
         rng.choice(agents[:-10]) if rng.random() > 0.05 else rng.choice(agents[-10:]))
        for _ in range(20_000)
    ]  # fmt: skip
    start = datetime(2024, 3, 1, tzinfo=UTC)
    with path.open("w") as out:
        for i in range(lines):
            ip, agent = rng.choice(visitors)
            when = start + timedelta(seconds=i // 50 + rng.randint(0, 2))
            stamp = when.strftime("%d/%b/%Y:%H:%M:%S +0000")
            roll = rng.random()
            if roll < 0.25:
                target = rng.choice(STATIC).format(h=rng.randint(1, 9), n=rng.randint(1, 5000))
            else:
                target = page(rng)
            status = 200
            if roll > 0.97:
                status = 404
            elif roll > 0.965:
                status = 500
            elif rng.random() < 0.1:
                status = 304
            internal = f"https://shop.example{page(rng)}"
            referrer = rng.choice(REFERRERS) if rng.random() < 0.3 else internal
            size = rng.randint(200, 90_000) if status == 200 else 0
            out.write(
                f'{ip} - - [{stamp}] "GET {target} HTTP/1.1" {status} {size} '
                f'"{referrer}" "{agent}"\n'
            )


def timed(command: list[str], **kwargs: Any) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - started, done.stdout


def import_run(log: Path, work: Path, url: str) -> tuple[float, dict[str, Any]]:
    """``touchpoint import-logs --json`` into ``url`` (empty: embedded); wall clock + summary."""
    prefix = f"bench-{secrets.token_hex(4)}"
    config = work / f"config-{prefix}.toml"
    config.write_text(
        f'[data]\ndir = "{work / prefix}"\n[redis]\nurl = "{url}"\nprefix = "{prefix}"\n'
        '[sites.shop]\nwrite_key = "bench-write-key"\n'
    )
    command = [*TOUCHPOINT, "import-logs", str(log), "--config", str(config), "--no-progress"]
    try:
        seconds, out = timed([*command, "--json"], cwd=ROOT)
    finally:
        if url:
            client = redis.Redis.from_url(url)
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(key)
            client.close()
    return seconds, json.loads(out)


def service_url() -> str:
    try:
        client = redis.Redis.from_url(SERVICE_URL, socket_connect_timeout=1)
        client.ping()
        client.close()
    except (redis.RedisError, OSError):
        return ""
    return SERVICE_URL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 lines")
    args = parser.parse_args()
    lines = 100_000 if args.quick else args.lines
    work = Path(tempfile.mkdtemp(prefix="tp-bench-"))
    try:
        log = work / "access.log"
        print(f"generating {lines:,} combined log lines...", file=sys.stderr)
        generate(log, lines)
        runs: list[tuple[str, float, dict[str, Any] | None]] = []
        for name, url in (("embedded", ""), ("service", service_url())):
            if name == "embedded" or url:
                seconds, summary = import_run(log, work, url)
                runs.append((f"`touchpoint import-logs` → {name} Redis", seconds, summary))
        if goaccess := shutil.which("goaccess"):
            report = work / "goaccess.json"
            command = [goaccess, str(log), "--log-format=COMBINED", "--no-global-config",
                       "-o", str(report)]  # fmt: skip
            runs.append(
                ("`goaccess --log-format=COMBINED -o report.json`", timed(command)[0], None)
            )
        _table(runs, lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nreproduce: .venv/bin/python bench/import_logs.py --lines {lines}")


def _table(runs: list[tuple[str, float, dict[str, Any] | None]], lines: int) -> None:
    """Wall clock (start-up included) for every run; the importer's own rate beside it."""
    yardstick = next((seconds for _, seconds, summary in runs if summary is None), None)
    print(f"\n{lines:,} combined log lines\n")
    print("| run | wall clock | lines/s (wall) | lines/s (import) | vs GoAccess (wall) |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, summary in runs:
        rate = f"{summary['lines_per_second']:,}" if summary else ""
        ratio = f"{yardstick / seconds:.2f}x" if yardstick else ""
        print(f"| {name} | {seconds:.2f} s | {lines / seconds:,.0f} | {rate} | {ratio} |")
    for name, _, summary in runs:
        if summary:
            skipped = ", ".join(f"{k} {v:,}" for k, v in summary["skipped"].items() if v)
            print(f"\n{name}: imported {summary['imported']:,}; skipped {skipped}; "
                  f"malformed {summary['malformed']}", end="")  # fmt: skip
    print()


if __name__ == "__main__":
    main()
