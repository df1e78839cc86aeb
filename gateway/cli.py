"""The ``touchpoint`` command: parse, call, print. Errors are one line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import gc
import json
import logging
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from gateway import config as configuration
from gateway import keys as K
from gateway import logs
from gateway.erp.base import ENTITIES
from gateway.errors import ConfigError, TouchpointError

if TYPE_CHECKING:
    from gateway.bus import Bus
    from gateway.warehouse.olap import Query, Result

log = logging.getLogger(__name__)
T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.config = getattr(args, "config", None)
    try:
        return int(args.run(args) or 0)
    except TouchpointError as exc:
        print(f"touchpoint: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,  # so `--config` works before and after the command
        help="configuration file (default: $TOUCHPOINT_CONFIG or config.toml)",
    )
    parser = argparse.ArgumentParser(prog="touchpoint", description=__doc__, parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the gateway (HTTP + agents)")
    serve.set_defaults(run=cmd_serve)

    agent = commands.add_parser("agent", parents=[common], help="run one agent in this process")
    agent.add_argument("name", help="agent name, e.g. channel-counts")
    agent.set_defaults(run=cmd_agent)

    check = commands.add_parser("check-config", parents=[common], help="validate a configuration")
    check.add_argument("file", nargs="?", help="file to check (default: --config)")
    check.set_defaults(run=cmd_check_config)

    bus = commands.add_parser("bus", parents=[common], help="inspect the event bus")
    bus_commands = bus.add_subparsers(dest="bus_command", required=True, metavar="COMMAND")
    stats = bus_commands.add_parser("stats", parents=[common], help="streams and groups as JSON")
    stats.set_defaults(run=cmd_bus_stats)
    streams = (*K.STREAMS, K.ERP)
    dead = bus_commands.add_parser(
        "dead-letters", parents=[common], help="a stream's dead-lettered entries as JSON"
    )
    dead.add_argument("stream", choices=streams)
    dead.add_argument("--count", type=_positive, default=100, help="oldest first (default 100)")
    dead.set_defaults(run=cmd_bus_dead_letters)
    for name, does, every, run in (
        (
            "redrive",
            "put dead-lettered entries back on their stream, for the group that gave up",
            "every dead letter of the stream",
            cmd_bus_redrive,
        ),
        (
            "discard",
            "delete dead-lettered entries for good (after looking at them)",
            "every dead letter the stream holds when it starts",
            cmd_bus_discard,
        ),
    ):
        dead_letters = bus_commands.add_parser(name, parents=[common], help=does)
        dead_letters.add_argument("stream", choices=streams)
        dead_letters.add_argument(
            "ids",
            nargs="*",
            type=_stream_id,
            metavar="ID",
            help="dead-letter ids (see dead-letters)",
        )
        dead_letters.add_argument("--all", action="store_true", help=every)
        dead_letters.set_defaults(run=run)

    imp = commands.add_parser(
        "import-logs", parents=[common], help="import web server access logs as page events"
    )
    imp.add_argument(
        "files", nargs="+", metavar="FILE", help="access log (plain, gzip, bz2, xz); - for stdin"
    )
    imp.add_argument("--site", help="site the events belong to (default: the only one)")
    imp.add_argument(
        "--log-format",
        metavar="FORMAT",
        help="a known format (combined, common, vhost_combined, vhost_common, "
        "nginx_request_time) or an Apache LogFormat string (default: detected)",
    )
    imp.add_argument("--keep-static", action="store_true", help="import static assets too")
    imp.add_argument("--keep-bots", action="store_true", help="import bots too")
    imp.add_argument("--keep-errors", action="store_true", help="import 4xx/5xx responses too")
    imp.add_argument("--resume", action="store_true", help="go on after the last checkpoint")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    imp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    imp.set_defaults(run=cmd_import_logs)

    pos = commands.add_parser(
        "import-pos", parents=[common], help="import a till export (CSV or NDJSON) as store sales"
    )
    pos.add_argument("file", metavar="FILE", help="the export, plain or gzip")
    pos.add_argument(
        "--format", choices=("csv", "ndjson"), help="default: from the file name (.csv, .ndjson)"
    )
    pos.add_argument("--mapping", metavar="NAME", help="CSV column mapping (default: lines)")
    pos.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    pos.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    pos.set_defaults(run=cmd_import_pos)

    warehouse = commands.add_parser("warehouse", parents=[common], help="manage the warehouse")
    warehouse_commands = warehouse.add_subparsers(
        dest="warehouse_command", required=True, metavar="COMMAND"
    )
    migrate = warehouse_commands.add_parser(
        "migrate", parents=[common], help="apply the schema migrations not applied yet"
    )
    migrate.set_defaults(run=cmd_warehouse_migrate)

    erp = commands.add_parser("erp", parents=[common], help="the ERP connector")
    erp_commands = erp.add_subparsers(dest="erp_command", required=True, metavar="COMMAND")
    erp_sync = erp_commands.add_parser(
        "sync",
        parents=[common],
        help="sync from the ERP now, in this process (DuckDB: with the gateway stopped)",
    )
    erp_sync.add_argument(
        "--entity",
        action="append",
        choices=ENTITIES,
        help="an entity to sync (repeatable; default: all of them)",
    )
    erp_sync.add_argument("--full", action="store_true", help="from the start, not the cursor")
    erp_sync.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    erp_sync.set_defaults(run=cmd_erp_sync)
    erp_status = erp_commands.add_parser(
        "status", parents=[common], help="when each entity last synced, and whether it is stale"
    )
    erp_status.add_argument("--json", action="store_true", help="print one JSON object")
    erp_status.set_defaults(run=cmd_erp_status)

    olap = commands.add_parser(
        "olap", parents=[common], help="a cube query on the warehouse (measures x dimensions)"
    )
    olap.add_argument("--measures", required=True, help="comma-separated, e.g. events,revenue")
    olap.add_argument("--dims", default="", help="comma-separated, e.g. day,channel")
    olap.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="DIM=VALUE[,VALUE]",
        help="keep rows whose dimension has one of the values (repeat: all must hold)",
    )
    olap.add_argument("--from", dest="start", metavar="DATE", help="first day (ISO, inclusive)")
    olap.add_argument("--to", dest="end", metavar="DATE", help="last day (ISO, exclusive)")
    olap.add_argument("--format", choices=("table", "csv", "json"), default="table")
    olap.set_defaults(run=cmd_olap)
    return parser


def _load(args: argparse.Namespace) -> configuration.Config:
    config = configuration.load(args.config)
    logs.configure(config.log.level, config.log.format)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.agents import pool

    config = configuration.load(args.config if args.file is None else args.file)
    pool.check(config.agents.run, config.source)
    print("ok")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.web.app import create_app

    config = _load(args)
    tune_gc()
    host, port = config.http.host, config.http.port
    try:
        web.run_app(
            create_app(config),
            host=host,
            port=port,
            shutdown_timeout=config.http.shutdown_timeout,
            access_log=None,
            print=lambda _: log.info(
                "touchpoint on http://%s:%d (data in %s)", host, port, config.data_dir
            ),
            loop=new_loop(),
        )
    except (OSError, UnicodeError) as exc:  # where it was told to listen it cannot
        # (UnicodeError: a host name the IDNA codec refuses, "a..b")
        if isinstance(exc, OSError) and not _cannot_listen(exc):
            raise
        raise ConfigError(config.source, "http", f"cannot listen on {host}:{port}: {exc}") from None
    return 0


def _cannot_listen(exc: OSError) -> bool:
    return isinstance(exc, socket.gaierror) or exc.errno in _CANNOT_LISTEN


_CANNOT_LISTEN: Final = {errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES}


def cmd_agent(args: argparse.Namespace) -> int:
    from gateway.agents import pool

    config = _load(args)
    pool.check([args.name], "touchpoint agent", "NAME")  # before Redis is started for it
    tune_gc()
    return _run(_agent(config, args.name))


async def _agent(config: configuration.Config, name: str) -> int:
    from gateway.agents import AGENTS, AgentContext
    from gateway.agents.pool import AgentPool, build
    from gateway.bus import Bus
    from gateway.keys import Keys
    from gateway.redis import connect, redis_url
    from gateway.warehouse import Warehouse, open_warehouse

    spec = AGENTS.get(name)
    async with redis_url(config) as url, contextlib.AsyncExitStack() as stack:
        client = connect(url, timeout=config.bus.block + config.redis.timeout)
        stack.push_async_callback(client.aclose)
        warehouse: Warehouse | None = None
        if spec is not None and spec.needs_warehouse:
            warehouse = await open_warehouse(config)
            stack.push_async_callback(warehouse.close)
            await warehouse.migrate()
        bus = Bus(client, Keys(config.redis.prefix), config.bus)
        pool = AgentPool(build([name], AgentContext(config, client, bus.keys, bus, warehouse)))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        pool.start()
        await stop.wait()
        log.info("stopping agent %s", name)
        await pool.stop(grace=config.http.shutdown_timeout)
    return 0


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) < 10) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _stream_id(text: str) -> str:
    """A stream entry id as Redis writes them (``1764460000000-0``)."""
    parts = text.split("-")
    if not re.fullmatch(r"[0-9]+-[0-9]+", text) or max(int(p) for p in parts) >= 1 << 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a stream id such as 1764460000000-0")
    return text


def cmd_bus_stats(args: argparse.Namespace) -> int:
    config = _load(args)
    stats = _run(_bus_stats(config))
    print(json.dumps(stats, indent=2))
    return 0


async def _bus_stats(config: configuration.Config) -> dict[str, Any]:
    return await _with_bus(config, lambda bus: bus.stats())


def cmd_bus_dead_letters(args: argparse.Namespace) -> int:
    config = _load(args)
    found = _run(_with_bus(config, lambda bus: bus.dead_letters(args.stream, args.count)))
    print(json.dumps([dataclasses.asdict(d) for d in found], indent=2))
    return 0


def _ids_or_all(args: argparse.Namespace) -> bool:
    """Whether a dead-letter command names ids or ``--all`` (one of them); says so if not."""
    if bool(args.ids) != bool(args.all):
        return True
    print(f"touchpoint bus {args.bus_command}: name dead-letter ids, or --all", file=sys.stderr)
    return False


#: Dead letters ``bus redrive --all`` reads and moves at a time.
REDRIVE_PAGE = 500


def cmd_bus_redrive(args: argparse.Namespace) -> int:
    if not _ids_or_all(args):
        return 2
    config = _load(args)

    asked: list[str] = list(args.ids)

    async def redrive(bus: Bus) -> list[tuple[str, str]]:
        if not args.all:
            return await bus.redrive(args.stream, asked)
        moved: list[tuple[str, str]] = []
        after = None
        # page by id: one kept without its bytes stays, and must not hide those after it
        while page := [d.id for d in await bus.dead_letters(args.stream, REDRIVE_PAGE, after)]:
            asked.extend(page)
            moved += await bus.redrive(args.stream, page)
            after = page[-1]
        return moved

    moved = _run(_with_bus(config, redrive))
    left = sorted(set(asked) - {old for old, _ in moved})
    print(json.dumps({"moved": [{"dead_letter": old, "id": new} for old, new in moved],
                      "not_moved": left}, indent=2))  # fmt: skip
    return 1 if left else 0


def cmd_bus_discard(args: argparse.Namespace) -> int:
    if not _ids_or_all(args):
        return 2
    config = _load(args)
    if args.all:
        count = _run(_with_bus(config, lambda bus: bus.discard_all(args.stream)))
        print(json.dumps({"discarded": count}, indent=2))
        return 0
    asked: list[str] = list(dict.fromkeys(args.ids))
    gone = _run(_with_bus(config, lambda bus: bus.discard(args.stream, asked)))
    missing = [i for i in asked if i not in set(gone)]
    print(json.dumps({"discarded": gone, "not_found": missing}, indent=2))
    return 1 if missing else 0


async def _with_bus(config: configuration.Config, work: Callable[[Bus], Awaitable[T]]) -> T:
    from gateway.bus import Bus
    from gateway.keys import Keys
    from gateway.redis import connect, redis_url

    async with redis_url(config) as url:
        client = connect(url, timeout=config.redis.timeout)
        try:
            return await work(Bus(client, Keys(config.redis.prefix), config.bus))
        finally:
            await client.aclose()


def cmd_import_logs(args: argparse.Namespace) -> int:
    from channels.weblog import importer

    config = _load(args)
    tune_gc()
    options = importer.Options(
        site=args.site,
        log_format=args.log_format,
        keep_static=args.keep_static,
        keep_bots=args.keep_bots,
        keep_errors=args.keep_errors,
        resume=args.resume,
        progress=not args.no_progress,
    )
    summary = _run(importer.import_logs(config, args.files, options))
    print(json.dumps(summary.as_json()) if args.json else summary.text())
    return 0


def cmd_import_pos(args: argparse.Namespace) -> int:
    from channels.pos import importer

    config = _load(args)
    summary = _run(
        importer.import_pos(
            config,
            args.file,
            format=args.format,
            mapping=args.mapping,
            progress=not args.no_progress,
        )
    )
    print(json.dumps(summary.as_json()) if args.json else summary.text())
    if not summary.rejected:
        return 0
    return 1 if summary.transactions else 2  # 2: not one valid transaction in the file


def cmd_warehouse_migrate(args: argparse.Namespace) -> int:
    config = _load(args)
    applied = _run(_warehouse_migrate(config))
    print(f"applied migrations {', '.join(map(str, applied))}" if applied else "up to date")
    return 0


async def _warehouse_migrate(config: configuration.Config) -> list[int]:
    from gateway.warehouse import open_warehouse

    warehouse = await open_warehouse(config)
    try:
        return await warehouse.migrate()
    finally:
        await warehouse.close()


def cmd_erp_sync(args: argparse.Namespace) -> int:
    from gateway.erp.cli import sync

    config = _load(args)
    results = _run(sync(config, args.entity, full=args.full, progress=not args.no_progress))
    for result in results:
        print(json.dumps(result.as_json()))
    return 1 if any(r.error or r.failed for r in results) else 0


def cmd_erp_status(args: argparse.Namespace) -> int:
    from gateway.erp.cli import status, status_text

    config = _load(args)
    found = _run(status(config))
    print(json.dumps(found) if args.json else status_text(found))
    return 0


def cmd_olap(args: argparse.Namespace) -> int:
    from gateway.warehouse.olap import parse_query

    config = _load(args)
    query = parse_query(args.measures, args.dims, args.filter, args.start, args.end)
    result = _run(_olap(config, query))
    if args.format == "json":
        print(json.dumps(result.as_json()))
    elif args.format == "csv":
        print(result.as_csv(), end="")
    else:
        print(result.as_table())
    return 0


async def _olap(config: configuration.Config, query: Query) -> Result:
    from gateway.warehouse import open_warehouse
    from gateway.warehouse.olap import run

    warehouse = await open_warehouse(config)
    try:
        return await run(warehouse, query, max_rows=config.warehouse.max_rows)
    finally:
        await warehouse.close()


def tune_gc() -> None:
    """Fewer, later collections: a gateway holds few long-lived cycles but allocates many
    short-lived containers per event (bench/bus.py: consume+ack ~1.4x with this), and the
    collector holds a batch's events (tens of thousands) for a second or more, which every young
    collection walked again (bench/collector.py, timed with ``gc.callbacks``: 0.9-1.3 s of a run
    in collections with a young threshold of 50,000, 0.3 s with 1,000,000)."""
    gc.collect()
    gc.freeze()  # what start-up allocated is never collected again
    gc.set_threshold(1_000_000, 10, 10)


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coro)


if __name__ == "__main__":
    sys.exit(main())
