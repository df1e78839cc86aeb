"""``touchpoint import-logs`` into a real Redis: every format, compressed files and stdin, the
summary, resuming, re-import idempotence through the channel-counts agent, visitor ids."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.weblog.importer import (
    Checkpoints,
    LogImportError,
    Options,
    Summary,
    import_logs,
)
from channels.weblog.logformat import LogFormatError
from gateway.agents import counts
from gateway.agents.runtime import Agent
from gateway.bus import Bus
from gateway.config import Config
from gateway.events import Event, unpack
from gateway.keys import ENTRY_FIELD, EVENTS, Keys
from gateway.redis import connect
from tests.conftest import ROOT
from tests.helpers import eventually

FIXTURES = Path(__file__).parent / "fixtures"
CUSTOM = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" "%{Cookie}i" %D'
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


@pytest.fixture
def config(make_config: Callable[..., Config], service_redis_url: str, prefix: str) -> Config:
    return make_config(service_redis_url, prefix, "[bus]\nblock = 0.05")


async def run(config: Config, *files: Path | str, **options: Any) -> Summary:
    names = [str(f) for f in files]
    return await import_logs(config, names, Options(progress=False, **options))


async def published(config: Config) -> list[Event]:
    client = connect(config.redis.url.get(), timeout=5.0)
    try:
        rows: Any = await client.xrange(Keys(config.redis.prefix).stream(EVENTS))
    finally:
        await client.aclose()
    return [event for _, fields in rows for event in unpack(fields[ENTRY_FIELD])]


def line(ip: str, path: str, agent: str = CHROME, second: int = 0, status: int = 200) -> str:
    stamp = (datetime(2024, 4, 1, 12, tzinfo=UTC) + timedelta(seconds=second)).strftime(
        "%d/%b/%Y:%H:%M:%S +0000"
    )
    return f'{ip} - - [{stamp}] "GET {path} HTTP/1.1" {status} 100 "-" "{agent}"\n'


@pytest.mark.parametrize(
    ("fixture", "fmt", "read", "imported", "skipped", "malformed"),
    [
        ("combined.log", "combined", 12, 3, {"error": 3, "static": 2, "bot": 1}, 3),
        ("common.log", "common", 5, 2, {"error": 1, "static": 1}, 1),
        ("vhost_combined.log", "vhost_combined", 4, 2, {"static": 1, "bot": 1}, 0),
        ("vhost_common.log", "vhost_common", 3, 1, {"static": 1, "error": 1}, 0),
        ("nginx_request_time.log", "nginx_request_time", 3, 2, {"static": 1}, 0),
        ("custom.log", CUSTOM, 3, 2, {"static": 1}, 0),
    ],
)
async def test_every_format_imports_with_counts_by_reason(
    config: Config,
    fixture: str,
    fmt: str,
    read: int,
    imported: int,
    skipped: dict[str, int],
    malformed: int,
) -> None:
    summary = await run(config, FIXTURES / fixture, log_format=fmt if fmt == CUSTOM else None)
    assert summary.files[0].format == ("custom" if fmt == CUSTOM else fmt)
    assert (summary.read, summary.imported, summary.malformed) == (read, imported, malformed)
    assert {k: v for k, v in summary.skipped.items() if v} == skipped
    assert summary.read == summary.imported + sum(summary.skipped.values()) + summary.malformed
    events = await published(config)
    assert len(events) == len({e.event_id for e in events}) == imported
    assert {(e.type, e.channel, e.site) for e in events} == {("page", "web", "demo")}


async def test_events_carry_the_fields_of_their_lines(config: Config) -> None:
    before = datetime.now(UTC)
    summary = await run(config, FIXTURES / "combined.log")
    first, home, cart = await published(config)
    identity = summary.files[0].identity
    assert first.event_id == identity[:20] + "000000000001" and len(first.event_id) == 32
    assert cart.event_id == identity[:20] + f"{12:012x}"
    assert first.timestamp == datetime(2023, 10, 10, 11, 55, 36, tzinfo=UTC)
    assert before <= first.received_at <= datetime.now(UTC)
    assert first.anonymous_id is not None and first.anonymous_id.startswith("v-")
    assert first.properties == {
        "path": "/products/42", "url": "/products/42?color=red&size=40",
        "search": "?color=red&size=40", "referrer": "https://www.google.com/", "method": "GET",
        "status": 200, "bytes": 5120,
    }  # fmt: skip
    assert first.context["ip"] == "192.0.2.0"  # anonymized: the site's default
    assert first.context["userAgentData"]["browser"] == "Chrome"
    assert first.context["page"]["referrer"] == "https://www.google.com/"
    assert first.context["source"] == "access-log"
    assert "bot" not in first.context
    assert (home.properties["path"], home.properties["search"]) == ("/", "")
    assert "referrer" not in home.properties  # "-" in the log
    assert (cart.context["ip"], cart.properties["bytes"]) == ("2001:db8::", 0)


async def test_cookie_and_request_time_of_a_custom_format(config: Config) -> None:
    await run(config, FIXTURES / "custom.log", log_format=CUSTOM)
    account, orders = await published(config)
    assert account.anonymous_id == "a-42f1"  # the tracker's cookie
    assert account.properties["request_time"] == pytest.approx(0.012345)
    assert orders.anonymous_id is not None and orders.anonymous_id.startswith("v-")


async def test_keep_flags_import_static_bots_and_errors(config: Config) -> None:
    summary = await run(
        config, FIXTURES / "combined.log", keep_static=True, keep_bots=True, keep_errors=True
    )
    assert summary.imported == 8
    assert {k: v for k, v in summary.skipped.items() if v} == {"no_request": 1}  # "-" 408
    events = await published(config)
    statuses = sorted(e.properties["status"] for e in events)
    assert statuses == [200, 200, 200, 200, 200, 304, 404, 500]
    assert [e.properties["path"] for e in events if e.context.get("bot")] == ["/products/42"]


async def test_gzip_and_bz2_files_import_like_the_plain_one(config: Config, tmp_path: Path) -> None:
    data = (FIXTURES / "combined.log").read_bytes()
    (tmp_path / "access.log.gz").write_bytes(gzip.compress(data))
    (tmp_path / "access.log.1").write_bytes(bz2.compress(data))  # told by content, not name
    summary = await run(
        config, FIXTURES / "combined.log", tmp_path / "access.log.gz", tmp_path / "access.log.1"
    )
    assert [(f.read, f.imported) for f in summary.files] == [(12, 3)] * 3
    assert len({f.identity for f in summary.files}) == 1  # identity is of the content
    events = await published(config)
    assert len(events) == 9 and len({e.event_id for e in events}) == 3


def cli(config: Config, *args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway.cli", "import-logs", *args, "--config", config.source]
    with (stdin or Path("/dev/null")).open("rb") as feed:
        return subprocess.run(
            command, cwd=ROOT, stdin=feed, capture_output=True, text=True, timeout=60
        )


async def test_stdin_with_json_summary(config: Config) -> None:
    done = await asyncio.to_thread(
        cli, config, "-", "--json", "--no-progress", stdin=FIXTURES / "combined.log"
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    summary = json.loads(done.stdout)
    assert (summary["read"], summary["imported"], summary["malformed"]) == (12, 3, 3)
    skipped = {"checkpoint": 0, "error": 3, "no_request": 0, "static": 2, "bot": 1}
    assert summary["skipped"] == skipped
    assert summary["files"][0]["file"] == "<stdin>"
    assert [(m["file"], m["line"]) for m in summary["malformed_lines"]] == [
        ("<stdin>", 8), ("<stdin>", 9), ("<stdin>", 13),
    ]  # fmt: skip
    assert len(await published(config)) == 3


async def test_no_format_that_fits_is_a_one_line_error(config: Config) -> None:
    done = await asyncio.to_thread(cli, config, str(FIXTURES / "custom.log"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"touchpoint: error: {FIXTURES / 'custom.log'}: no known log")
    assert "--log-format" in done.stderr
    assert await published(config) == []


async def test_nothing_is_published_when_a_file_cannot_be_read(config: Config) -> None:
    missing = FIXTURES / "missing.log"
    with pytest.raises(LogImportError, match=f"{missing}: cannot read: No such file"):
        await run(config, FIXTURES / "combined.log", missing)
    with pytest.raises(LogFormatError, match="--log-format fits none"):
        await run(config, FIXTURES / "combined.log", log_format="common")
    assert await published(config) == []


async def test_the_first_ten_malformed_lines_are_reported(config: Config, tmp_path: Path) -> None:
    log = tmp_path / "mixed.log"
    log.write_text("".join(f"{line('192.0.2.1', f'/p{i}')}garbage {i}\n" for i in range(15)))
    summary = await run(config, log)
    assert (summary.imported, summary.malformed) == (15, 15)
    assert [(m.file, m.line, m.text) for m in summary.examples] == [
        (str(log), 2 * i + 2, f"garbage {i}") for i in range(10)
    ]
    assert f"  {log}:2: garbage 0" in summary.text()


async def test_control_characters_of_a_line_are_escaped_when_shown(
    config: Config, tmp_path: Path
) -> None:
    log = tmp_path / "junk.log"
    log.write_bytes(line("192.0.2.1", "/a").encode() + b"\x1b[31mred\xff\n")
    summary = await run(config, log)
    assert [m.text for m in summary.examples] == ["\\x1b[31mred\ufffd"]


async def test_lines_no_server_writes_are_malformed_and_the_rest_imported(
    config: Config, tmp_path: Path
) -> None:
    """Such a line once stopped the import with a traceback after part of the file was
    published, and --resume stopped on it again: the file could never be imported whole."""
    log = tmp_path / "odd.log"
    good = [line("192.0.2.1", f"/p{i}", second=i) for i in range(3)]
    odd = [
        good[0].replace(" 100 ", f" {10**30} "),  # bytes past 2^64
        good[0].replace("01/Apr/2024", "01/Apr/1999"),  # before any event
        good[0].replace("01/Apr/2024", "01/Apr/2099"),  # ahead of now
        good[0].replace("/p0", "/" + "x" * 40_000),  # longer than an event may be
    ]
    log.write_text(good[0] + "".join(odd) + good[1] + good[2])
    summary = await run(config, log)
    assert (summary.imported, summary.malformed) == (3, 4)
    assert [m.line for m in summary.examples] == [2, 3, 4, 5]
    assert [e.properties["path"] for e in await published(config)] == ["/p0", "/p1", "/p2"]


async def test_an_over_long_cookie_is_not_an_anonymous_id(config: Config, tmp_path: Path) -> None:
    fmt = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" "%{Cookie}i"'
    log = tmp_path / "cookies.log"
    stamp = "[01/Apr/2024:12:00:00 +0000]"
    log.write_text(
        f'192.0.2.1 - - {stamp} "GET /a HTTP/1.1" 200 1 "-" "{CHROME}" "tp_aid=v-1"\n'
        f'192.0.2.1 - - {stamp} "GET /b HTTP/1.1" 200 1 "-" "{CHROME}" "tp_aid={"v" * 300}"\n'
    )
    first, second = await run_events(config, log, log_format=fmt)
    assert first.anonymous_id == "v-1"
    assert second.anonymous_id and len(second.anonymous_id) <= 255  # the derived visitor


async def run_events(config: Config, log: Path, **options: Any) -> list[Event]:
    await run(config, log, **options)
    return await published(config)


async def test_a_file_cut_short_says_what_to_do(config: Config, tmp_path: Path) -> None:
    """Lines before the cut may be in the bus: the one line says so, and how to go on."""
    data = gzip.compress("".join(line("192.0.2.1", f"/p{i}") for i in range(20_000)).encode())
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogImportError, match=r"cut.log.gz: cannot read after line \d+: .*"
                       r"in the bus already: import the file again"):  # fmt: skip
        await run(config, cut)


async def test_a_directory_is_refused_before_anything_is_published(
    config: Config, tmp_path: Path
) -> None:
    with pytest.raises(LogImportError, match=f"{tmp_path}: is a directory"):
        await run(config, FIXTURES / "combined.log", tmp_path)
    assert await published(config) == []


async def test_the_site_is_the_only_one_or_chosen(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> None:
    config = make_config(service_redis_url, prefix, '[sites.other]\nwrite_key = "other-key-1"')
    with pytest.raises(LogImportError, match=r"several sites .*\(demo, other\); choose with"):
        await run(config, FIXTURES / "common.log")
    with pytest.raises(LogImportError, match="no site 'nope'"):
        await run(config, FIXTURES / "common.log", site="nope")
    assert (await run(config, FIXTURES / "common.log", site="other")).site == "other"
    assert {e.site for e in await published(config)} == {"other"}


async def test_resume_publishes_only_the_lines_after_the_checkpoint(
    config: Config, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    log.write_text("".join(line(f"192.0.2.{i}", f"/products/{i}", second=i) for i in range(40)))
    assert log.stat().st_size > 4096  # the first 4 KB, the identity, will not change
    first = await run(config, log)
    assert first.imported == 40
    identity = first.files[0].identity
    assert Checkpoints(config.data_dir / "imports").get(identity) == 40

    # The log grew; its last line is still being written (no newline yet).
    more = [line(f"198.51.100.{i}", f"/cart/{i}", second=40 + i) for i in range(10)]
    with log.open("a") as out:
        out.write("".join(more).rstrip("\n"))
    resumed = await run(config, log, resume=True)
    assert resumed.files[0].identity == identity
    assert (resumed.read, resumed.imported, resumed.skipped["checkpoint"]) == (50, 10, 40)
    events = await published(config)
    assert len(events) == len({e.event_id for e in events}) == 50
    assert [e.properties["path"] for e in events[40:]] == [f"/cart/{i}" for i in range(10)]
    # The unfinished last line is not checkpointed: the next run reads it again, same id.
    assert Checkpoints(config.data_dir / "imports").get(identity) == 49
    again = await run(config, log, resume=True)
    assert (again.imported, again.skipped["checkpoint"]) == (1, 49)
    assert (await published(config))[-1].event_id == events[-1].event_id


async def drained_counts(config: Config) -> dict[str, int]:
    """Run the channel-counts agent until its group has nothing pending or lagging."""
    client = connect(config.redis.url.get(), timeout=5.0)
    bus = Bus(client, Keys(config.redis.prefix), config.bus)
    agent = Agent("channel-counts", counts.handler(client, bus.keys), bus, stream=EVENTS)
    task = asyncio.create_task(agent.run())

    async def drained() -> bool:
        groups = (await bus.stats())["streams"][EVENTS]["groups"]
        group = groups.get("channel-counts")
        return group is not None and group["pending"] == 0 and group["lag"] == 0

    try:
        await eventually(drained)
    finally:
        agent.stop()
        await task
    try:
        return await counts.read(client, bus.keys)
    finally:
        await client.aclose()


async def test_importing_twice_counts_each_event_once(config: Config) -> None:
    await run(config, FIXTURES / "combined.log", FIXTURES / "vhost_combined.log")
    once = await drained_counts(config)
    assert once == {"web": 5}
    await run(config, FIXTURES / "combined.log", FIXTURES / "vhost_combined.log")
    assert len(await published(config)) == 10  # published again, same ids...
    assert await drained_counts(config) == once  # ...and counted once


async def test_same_visitor_across_files_other_agent_other_visitor(
    make_config: Callable[..., Config], config: Config, tmp_path: Path, prefix: str
) -> None:
    (tmp_path / "monday.log").write_text(line("203.0.113.5", "/a"))
    (tmp_path / "tuesday.log").write_text(
        line("203.0.113.5", "/b", second=86_400) + line("203.0.113.5", "/c", FIREFOX, 86_401)
    )
    await run(config, tmp_path / "monday.log", tmp_path / "tuesday.log")
    monday, tuesday, firefox = [e.anonymous_id for e in await published(config)]
    assert monday == tuesday != firefox
    salt = config.data_dir / "visitor-salt"
    assert salt.stat().st_mode & 0o777 == 0o600

    salted = make_config(config.redis.url.get(), prefix, WEB__VISITOR_SALT="pepper")
    await run(salted, tmp_path / "monday.log")
    assert (await published(salted))[-1].anonymous_id != monday  # another salt, other ids
