"""The CLI against a real Redis: `bus stats` and `agent NAME` as its own process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway import cli
from gateway import keys as K
from gateway.agents import counts
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.keys import Keys
from tests.conftest import ROOT
from tests.helpers import event, eventually


@pytest.fixture
def config(make_config: Callable[..., Config], service_redis_url: str, prefix: str) -> Config:
    return make_config(service_redis_url, prefix, "[bus]\nblock = 0.1")


@pytest.fixture
async def config_bus(config: Config, prefix: str) -> AsyncIterator[Bus]:
    """A bus on the configuration's Redis and prefix (what the CLI commands look at)."""
    client = aioredis.Redis.from_url(config.redis.url.get())
    yield Bus(client, Keys(prefix), config.bus)
    await client.aclose()


async def test_bus_stats_prints_streams_and_groups_as_json(
    config: Config, config_bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = config_bus
    await bus.ensure_group(K.EVENTS, "channel-counts")
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(4)])
    await bus.read(K.EVENTS, "channel-counts", "c", count=1, block=0.01)

    assert await asyncio.to_thread(cli.main, ["bus", "stats", "--config", config.source]) == 0
    stats = json.loads(capsys.readouterr().out)
    events = stats["streams"]["events"]
    assert events["length"] == 4
    assert events["groups"]["channel-counts"]["pending"] == 1
    assert events["groups"]["channel-counts"]["lag"] == 3


async def dead_lettered(bus: Bus, published: int, given_up: int) -> list[Entry]:
    """``published`` one-event entries read by the ``collector`` group, the first ``given_up``
    of them dead-lettered; the entries read."""
    await bus.ensure_group(K.EVENTS, "collector")
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(published)])
    entries = await bus.read(K.EVENTS, "collector", "c", count=10, block=0.01)
    await bus.dead_letter(K.EVENTS, "collector", entries[:given_up], "KeyError: 'sku'")
    return entries


async def test_bus_dead_letters_lists_them_and_redrive_puts_them_back(
    config: Config, config_bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = config_bus
    entries = await dead_lettered(bus, 2, 2)
    base = ["--config", config.source]

    def run(*args: str) -> int:
        return cli.main(["bus", *args, *base])

    assert await asyncio.to_thread(run, "dead-letters", "events") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["entry_id"], d["group"], d["events"]) for d in listed] == [
        (e.id, "collector", 1) for e in entries
    ]
    assert listed[0]["reason"] == "KeyError: 'sku'"
    assert await asyncio.to_thread(run, "redrive", "events") == 2  # neither ids nor --all
    assert "name dead-letter ids, or --all" in capsys.readouterr().err
    assert await asyncio.to_thread(run, "redrive", "events", listed[0]["id"], "0-1") == 1
    answer = json.loads(capsys.readouterr().out)
    assert [m["dead_letter"] for m in answer["moved"]] == [listed[0]["id"]]
    assert answer["not_moved"] == ["0-1"]  # no such dead letter
    assert await asyncio.to_thread(run, "redrive", "events", "--all") == 0
    assert [m["dead_letter"] for m in json.loads(capsys.readouterr().out)["moved"]] == [
        listed[1]["id"]
    ]
    back = await bus.read(K.EVENTS, "collector", "c", count=10, block=0.01)
    assert [(e.events, e.only_for) for e in back] == [(e.events, "collector") for e in entries]
    assert await bus.dead_letters(K.EVENTS) == []
    for bad in (  # argparse: the streams there are, a count, stream ids
        ["dead-letters", "nope"],
        ["dead-letters", "events", "--count", "0"],
        ["dead-letters", "events", "--count", "\u0663"],  # a digit, not an ASCII one
        ["redrive", "events", "abc"],
        ["discard", "events", "99999999999999999999999-0"],  # past 64 bits: Redis refuses it
        ["redrive", "events", "\u0661\u0662-\u0660"],  # Arabic-Indic digits: Redis refuses them
    ):
        with pytest.raises(SystemExit) as exited:
            cli.main(["bus", *bad, *base])
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err
    assert "'0' is not a whole number of 1 or more" in err
    assert "'\u0663' is not a whole number of 1 or more" in err
    assert "'abc' is not a stream id" in err
    assert "'99999999999999999999999-0' is not a stream id" in err
    assert "'\u0661\u0662-\u0660' is not a stream id" in err


async def test_redrive_all_goes_past_a_dead_letter_that_cannot_go_back(
    config: Config,
    config_bus: Bus,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An old dead letter kept without its bytes stays where it is (and is reported); the
    pages after it are still put back."""
    bus = config_bus
    dead = bus.keys.dead_letter(K.EVENTS)
    legacy = await bus.client.xadd(
        dead, {K.ENTRY_FIELD: b"", b"id": b"1-1", b"group": b"collector", b"reason": b"old"}
    )
    await dead_lettered(bus, 3, 3)
    monkeypatch.setattr(cli, "REDRIVE_PAGE", 2)  # the legacy one and a good one on page one
    argv = ["bus", "redrive", "events", "--all", "--config", config.source]
    assert await asyncio.to_thread(cli.main, argv) == 1
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["moved"]) == 3
    assert answer["not_moved"] == [legacy.decode()]
    assert [d.id for d in await bus.dead_letters(K.EVENTS)] == [legacy.decode()]


async def test_bus_discard_deletes_the_dead_letters_named_or_all_there_were(
    config: Config, config_bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = config_bus
    await dead_lettered(bus, 4, 3)
    ids = [d.id for d in await bus.dead_letters(K.EVENTS)]
    base = ["--config", config.source]

    def run(*args: str) -> int:
        return cli.main(["bus", "discard", *args, *base])

    assert await asyncio.to_thread(run, "events") == 2  # neither ids nor --all
    assert "name dead-letter ids, or --all" in capsys.readouterr().err
    assert await asyncio.to_thread(run, "events", ids[1], "0-1") == 1
    assert json.loads(capsys.readouterr().out) == {"discarded": [ids[1]], "not_found": ["0-1"]}
    assert [d.id for d in await bus.dead_letters(K.EVENTS)] == [ids[0], ids[2]]
    assert await asyncio.to_thread(run, "events", ids[1]) == 1  # gone already
    capsys.readouterr()

    assert await asyncio.to_thread(run, "events", "--all") == 0
    assert json.loads(capsys.readouterr().out) == {"discarded": 2}
    assert await bus.dead_letters(K.EVENTS) == []
    # what the stream's groups have not given up on is untouched
    pending = await bus.client.xpending(bus.keys.stream(K.EVENTS), "collector")
    assert pending["pending"] == 1
    assert await asyncio.to_thread(run, "events", "--all") == 0
    assert json.loads(capsys.readouterr().out) == {"discarded": 0}


async def test_bus_discard_all_keeps_a_dead_letter_that_came_after_it_looked(
    config_bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--all`` is what the stream held when it started: one dead-lettered between its look
    and its trim stays."""
    bus = config_bus
    await bus.ensure_group(K.EVENTS, "collector")
    await bus.publish_many(K.EVENTS, [[event(i)] for i in range(2)])
    first, second = await bus.read(K.EVENTS, "collector", "c", count=10, block=0.01)
    await bus.dead_letter(K.EVENTS, "collector", [first], "one")
    looked = bus.client.xrevrange

    async def look_then_another_arrives(*args: object, **kwargs: object) -> object:
        seen = await looked(*args, **kwargs)  # type: ignore[arg-type]
        await bus.dead_letter(K.EVENTS, "collector", [second], "two")
        return seen

    monkeypatch.setattr(bus.client, "xrevrange", look_then_another_arrives)
    assert await bus.discard_all(K.EVENTS) == 1
    assert [d.reason for d in await bus.dead_letters(K.EVENTS)] == ["two"]


async def test_agent_runs_as_its_own_process_and_stops_on_sigterm(
    config: Config, prefix: str
) -> None:
    client = aioredis.Redis.from_url(config.redis.url.get())
    bus = Bus(client, Keys(prefix), config.bus)
    await bus.publish_many(K.EVENTS, [[event(i, channel="pos")] for i in range(40)])
    command = [sys.executable, "-m", "gateway.cli", "agent", "channel-counts"]
    procs = [  # two members of one group: scale-out
        await asyncio.create_subprocess_exec(
            *command, "--config", config.source, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(_started(p) for p in procs)), 30)
        await eventually(lambda: _counted(client, bus.keys, {"pos": 40}))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 15) for p in procs]
        await client.aclose()
    assert codes == [0, 0]


async def _started(proc: asyncio.subprocess.Process) -> None:
    """Wait until the agent says it runs (its signal handlers are set by then)."""
    assert proc.stderr
    while b"agent channel-counts: consumer" not in await proc.stderr.readline():
        assert proc.returncode is None


async def _counted(client: aioredis.Redis, keys: Keys, expected: dict[str, int]) -> bool:
    return await counts.read(client, keys) == expected


def test_unknown_agent_is_a_one_line_error(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["agent", "nope", "--config", config.source]) == 2
    err = capsys.readouterr().err
    # the name is the command line's, not agents.run's
    assert err.startswith("touchpoint: error: touchpoint agent: NAME: no agent 'nope'")
    assert err.count("\n") == 1


def test_every_command_takes_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.toml"
    for command in (["serve"], ["agent", "channel-counts"], ["bus", "stats"], ["check-config"]):
        assert cli.main([*command, "--config", str(missing)]) == 2
        assert f"{missing}: cannot read" in capsys.readouterr().err
    assert cli.main(["check-config", ""]) == 2  # not the default config
    assert "--config: is empty" in capsys.readouterr().err
    assert cli.main(["check-config", "--config", ""]) == 2
    assert "--config: is empty" in capsys.readouterr().err


def test_serve_refuses_the_collector_with_one_of_its_steps(
    make_config: Callable[..., Config],
    service_redis_url: str,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(
        service_redis_url, prefix, '[agents]\nrun = ["collector", "identity", "sync"]'
    )
    assert cli.main(["serve", "--config", config.source]) == 2
    err = capsys.readouterr().err
    assert f"{config.source}: agents.run: collector runs filter, sessions" in err
    assert "also named: identity, sync" in err


def test_serve_where_it_cannot_listen_is_a_one_line_error(
    make_config: Callable[..., Config],
    service_redis_url: str,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        http = f'[http]\nhost = "127.0.0.1"\nport = {port}'
        config = make_config(service_redis_url, prefix, http, "[agents]\nrun = []")
        assert cli.main(["serve", "--config", config.source]) == 2
    err = capsys.readouterr().err
    assert f"{config.source}: http: cannot listen on 127.0.0.1:{port}: " in err
    assert "Traceback" not in err
    http = '[http]\nhost = "a..b"'  # the IDNA codec refuses it (UnicodeError)
    config = make_config(service_redis_url, prefix, http, "[agents]\nrun = []")
    assert cli.main(["serve", "--config", config.source]) == 2
    assert "http: cannot listen on a..b:8080: " in capsys.readouterr().err


def test_a_data_dir_that_cannot_be_made_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``data.dir`` under a file: the embedded Redis (``serve``) and the DuckDB file
    (``warehouse migrate``) say which directory they cannot make, no traceback."""
    (tmp_path / "file").touch()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[data]\ndir = "{tmp_path / "file" / "var"}"\n[sites.demo]\nwrite_key = "demo-write-key"\n'
    )
    for command, what in (
        (["serve"], "embedded redis: cannot make"),
        (["warehouse", "migrate"], "warehouse.duckdb: cannot make its directory"),
    ):
        assert cli.main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err  # serve logs a line about its admin token first
        assert err.splitlines()[-1].startswith("touchpoint: error: ") and what in err, err
        assert "Traceback" not in err
