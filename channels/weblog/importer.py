"""``touchpoint import-logs``: web server access logs → page events on the bus.

Reads files (plain, gzip, bz2 or xz, told apart by their first bytes) or stdin, detects each
one's format (:mod:`channels.weblog.logformat`), skips static assets, bots and 4xx/5xx unless
asked to keep them, and publishes one ``page`` event per kept line to the ``events`` stream in
packed entries, with a bounded number of publishes in flight while parsing goes on.

Re-importing adds nothing new: an event's id is the file's identity (a hash of its first 4 KB,
so a log that keeps growing or gets compressed keeps it, a rotated one gets a new one) followed
by the line number, and every sink is idempotent on event ids. A checkpoint under
``<data_dir>/imports/`` holds the last line whose events Redis confirmed; ``--resume`` goes on
after it. Visitors without the tracker's cookie get ``v-`` + a keyed hash of IP and user agent,
the same in every import, so imported traffic sessionizes like live traffic.
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import sys
import time
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from tqdm import tqdm  # type: ignore[import-untyped]

from channels.weblog.logformat import (
    REASONS,
    SAMPLE_LINES,
    LogFormat,
    LogFormatError,
    PageViews,
    compile_format,
    detect,
)
from channels.weblog.useragents import UserAgentParser
from gateway.bus import Bus
from gateway.config import Config
from gateway.errors import BusUnavailable, TouchpointError
from gateway.events import MAX_EVENT_BYTES, Event, pack
from gateway.keyfile import local_key
from gateway.keys import EVENTS, Keys
from gateway.redis import connect, redis_url

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: The tracker's first-party cookie holding the visitor's anonymous id.
TRACKER_COOKIE: Final = "tp_aid"
#: Bytes of (decompressed) content a file's identity is the hash of.
IDENTITY_BYTES: Final = 4096
EVENTS_PER_ENTRY: Final = 500
#: Entries one pipelined publish carries, and publishes awaiting Redis while parsing goes on.
ENTRIES_PER_PUBLISH: Final = 8
IN_FLIGHT: Final = 2
#: Characters of a line at most (an event's limit at ingest; servers cap request lines at 8 KB
#: or so): a longer one is malformed.
MAX_LINE: Final = MAX_EVENT_BYTES
#: Malformed lines the summary quotes.
MAX_EXAMPLES: Final = 10
#: What reading a file, compressed or not, raises when it cannot go on.
_READ_ERRORS: Final = (OSError, EOFError, lzma.LZMAError, zlib.error)


class _Readable(Protocol):
    """A binary stream, compressed or not."""

    def read(self, size: int = -1, /) -> bytes: ...


class LogImportError(TouchpointError):
    """An import cannot go on: an unreadable file, no site to import into, Redis gone."""


@dataclass(frozen=True)
class Options:
    """What ``touchpoint import-logs`` was asked to do."""

    #: The site the events belong to; None: the only configured one.
    site: str | None = None
    #: A known format's name or an Apache LogFormat string; None: detected per file.
    log_format: str | None = None
    keep_static: bool = False
    keep_bots: bool = False
    keep_errors: bool = False
    resume: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Malformed:
    file: str
    line: int
    text: str


@dataclass
class FileReport:
    file: str
    format: str
    identity: str
    read: int = 0
    imported: int = 0


@dataclass
class Summary:
    """What an import did; ``read == imported + sum(skipped) + malformed``."""

    site: str
    files: list[FileReport] = field(default_factory=list)
    read: int = 0
    imported: int = 0
    #: Lines not imported by reason: before the ``--resume`` checkpoint, or see REASONS.
    skipped: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("checkpoint", *REASONS), 0)
    )
    malformed: int = 0
    examples: list[Malformed] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["malformed_lines"] = data.pop("examples")
        data["seconds"] = round(self.seconds, 3)
        data["lines_per_second"] = round(self.lines_per_second)
        return data

    def text(self) -> str:
        """For people: a line per file, the totals, then the first malformed lines."""
        out = [
            f"{f.file} ({f.format}): {f.read:,} lines read, {f.imported:,} imported"
            for f in self.files
        ]
        rate = f"{self.seconds:.1f} s ({self.lines_per_second:,.0f} lines/s)"
        out.append(f"read {self.read:,} lines in {rate}; imported {self.imported:,} to {self.site}")
        reasons = ", ".join(f"{r} {n:,}" for r, n in self.skipped.items() if n) or "none"
        out.append(f"skipped {sum(self.skipped.values()):,} ({reasons})")
        out.append(f"malformed {self.malformed:,}" + (", the first:" if self.examples else ""))
        out += [f"  {m.file}:{m.line}: {m.text}" for m in self.examples]
        return "\n".join(out)


# --- files, salt, site, checkpoints ------------------------------------------------------------


class _Replay(io.RawIOBase):
    """``head`` again, then the rest of ``stream``: a pipe's first bytes are read only once."""

    def __init__(self, head: bytes, stream: _Readable) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        out = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(out), len(self._head))
            out[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._stream.read(len(out))
        out[: len(data)] = data
        return len(data)


@dataclass
class Source:
    """An opened access log: its name, identity, format and lines (the sample read first)."""

    name: str
    identity: str
    format: LogFormat | None
    lines: Iterator[str]
    raw: IO[bytes] | None

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()


def open_source(name: str, options: Options, stdin: IO[bytes] | None = None) -> Source:
    """Open ``name`` (``-``: stdin), decompressing as its first bytes say, and find its format.

    Raises LogImportError when it cannot be read and LogFormatError when no format fits.
    """
    shown = "<stdin>" if name == "-" else name
    try:
        raw = (stdin or sys.stdin.buffer) if name == "-" else open(name, "rb")  # noqa: SIM115
    except OSError as exc:
        raise LogImportError(f"{name}: cannot read: {exc.strerror}") from exc
    try:
        magic = raw.read(8)
        stream = _decompressed(magic, io.BufferedReader(_Replay(magic, raw)))
        head = _read_head(stream)
        text = io.TextIOWrapper(
            io.BufferedReader(_Replay(head, stream), 1 << 16),
            encoding="utf-8",
            errors="replace",
            newline="\n",
        )
        sample = list(itertools.islice(text, SAMPLE_LINES))
        fmt = _format(shown, sample, options)
    except _READ_ERRORS as exc:
        raw.close()
        raise LogImportError(f"{shown}: cannot read: {exc}") from exc
    except LogFormatError:
        raw.close()
        raise
    identity = hashlib.blake2b(head, digest_size=16).hexdigest()
    return Source(shown, identity, fmt, itertools.chain(sample, text), raw if name != "-" else None)


def _decompressed(magic: bytes, stream: io.BufferedReader) -> _Readable:
    """``stream`` decompressed as its first bytes ``magic`` say (gzip, bz2, xz), or as is."""
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(stream)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(stream)
    return stream


def _read_head(stream: _Readable) -> bytes:
    head = b""
    while len(head) < IDENTITY_BYTES and (chunk := stream.read(IDENTITY_BYTES - len(head))):
        head += chunk
    return head


def _format(name: str, sample: list[str], options: Options) -> LogFormat | None:
    """The format of a file from its first lines; None for a file with no lines."""
    lines = [line for line in sample if line.strip()]
    if not lines:
        return None
    if options.log_format:
        fmt = compile_format(options.log_format, cookie=TRACKER_COOKIE)
        if not any(fmt.parse(line) for line in lines):
            raise LogFormatError(
                f"{name}: --log-format fits none of the first {len(lines)} non-empty lines "
                f"(first: {_excerpt(lines[0])})"
            )
        return fmt
    found = detect(lines, cookie=TRACKER_COOKIE)
    if found is None:
        raise LogFormatError(
            f"{name}: no known log format fits (first line: {_excerpt(lines[0])}); "
            "give one with --log-format"
        )
    return found


def _excerpt(line: str, limit: int = 120) -> str:
    """The start of ``line`` as it may be shown on a terminal (control characters and bytes
    that were not UTF-8 escaped)."""
    line = line.rstrip("\r\n")
    shown = line[:limit]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    return shown if len(line) <= limit else shown + "..."


def choose_site(config: Config, name: str | None) -> str:
    """``--site``, else the only configured site."""
    sites = sorted(config.sites)
    if name is not None:
        if name not in config.sites:
            known = ", ".join(sites) or "none"
            raise LogImportError(f"{config.source}: no site {name!r} (configured: {known})")
        return name
    if len(sites) == 1:
        return sites[0]
    if not sites:
        raise LogImportError(f"{config.source}: no site is configured; add a [sites.NAME] table")
    raise LogImportError(f"several sites are configured ({', '.join(sites)}); choose with --site")


def visitor_key(config: Config) -> bytes:
    """The visitor salt as a blake2b key: ``web.visitor_salt``, else a random one made once
    and kept in ``<data_dir>/visitor-salt`` (mode 0600) so every import uses the same."""
    if config.web.visitor_salt.is_set:
        salt = config.web.visitor_salt.get().encode()
    else:
        path = config.data_dir / "visitor-salt"
        try:
            salt = local_key(path)
        except OSError as exc:
            raise LogImportError(f"{path}: cannot make or read the visitor salt: {exc}") from exc
    return salt if len(salt) <= 64 else hashlib.blake2b(salt).digest()


class Checkpoints:
    """Per file identity: the last line whose events Redis confirmed (JSON files)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def get(self, identity: str) -> int:
        try:
            line = int(json.loads((self.dir / f"{identity}.json").read_text())["line"])
        except (OSError, ValueError, KeyError, TypeError, OverflowError):
            return 0
        return max(line, 0)

    def put(self, identity: str, name: str, line: int) -> None:
        path = self.dir / f"{identity}.json"
        tmp = path.with_suffix(".tmp")
        data = {"file": name, "line": line, "at": datetime.now(UTC).isoformat()}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        except OSError as exc:
            raise LogImportError(f"{path}: cannot keep the checkpoint: {exc}") from exc


# --- the import ----------------------------------------------------------------------------------


async def import_logs(
    config: Config, names: Sequence[str], options: Options, *, stdin: IO[bytes] | None = None
) -> Summary:
    """Import the access logs ``names`` (``-``: stdin) into the bus; the summary says how it went.

    Every file is opened and its format found before anything is published, so an unreadable
    file or one no format fits stops the import before it starts; stdin and named pipes can be
    read only once and are checked at their turn.
    """
    site = choose_site(config, options.site)
    check_files(names, options)
    views = PageViews(
        site,
        key=visitor_key(config),
        agents=UserAgentParser(config.web.ua_cache),
        anonymize=config.sites[site].anonymize_ip,
        keep_static=options.keep_static,
        keep_bots=options.keep_bots,
        keep_errors=options.keep_errors,
    )
    checkpoints = Checkpoints(config.data_dir / "imports")
    async with redis_url(config) as url:
        # Bulk work, not a request with someone waiting: a slow Redis gets more time than ingest.
        client = connect(url, timeout=max(config.redis.timeout, 10.0))
        try:
            bus = Bus(client, Keys(config.redis.prefix), config.bus)
            run = _Import(bus, views, checkpoints, options)
            return await run.all(names, stdin)
        finally:
            await client.aclose()


def check_files(names: Sequence[str], options: Options) -> None:
    """Open every regular file and find its format: raise now rather than half way through."""
    for name in names:
        if Path(name).is_dir():
            raise LogImportError(f"{name}: is a directory")
        if name != "-" and (Path(name).is_file() or not Path(name).exists()):
            open_source(name, options).close()


class _Import:
    """One run: reads the sources in turn, publishes as it goes and keeps the summary.

    Reading and parsing block the event loop on purpose: this process has nothing else to do
    but the publishes in flight, which go on whenever the loop gets control back.
    """

    def __init__(
        self, bus: Bus, views: PageViews, checkpoints: Checkpoints, options: Options
    ) -> None:
        self.bus = bus
        self.views = views
        self.checkpoints = checkpoints
        self.options = options
        self.summary = Summary(views.site)
        #: Publishes awaiting Redis: (task, source, last line they cover, events).
        self._in_flight: deque[tuple[asyncio.Task[list[str]], Source, int, int]] = deque()
        self._bar = tqdm(
            unit=" lines",
            unit_scale=True,
            file=sys.stderr,
            disable=not options.progress,
            leave=False,
            mininterval=0.5,
        )

    async def all(self, names: Sequence[str], stdin: IO[bytes] | None) -> Summary:
        started = time.perf_counter()
        try:
            for name in names:
                source = open_source(name, self.options, stdin)
                try:
                    await self._file(source)
                finally:
                    source.close()
        finally:
            for task, *_ in self._in_flight:
                task.cancel()
            await asyncio.gather(*[t for t, *_ in self._in_flight], return_exceptions=True)
            self._bar.close()
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    async def _file(self, source: Source) -> None:
        """The hot path: parse, filter, convert, pack, publish, line after line."""
        report = FileReport(
            source.name, source.format.name if source.format else "-", source.identity
        )
        self.summary.files.append(report)
        if source.format is None:
            return
        self._bar.set_description(source.name, refresh=False)
        parse, skip_reason, make = source.format.parse, self.views.skip_reason, self.views.event
        plausible = self.views.plausible
        skipped = self.summary.skipped
        prefix = source.identity[:20]
        lines = enumerate(source.lines, 1)
        start = self.checkpoints.get(source.identity) if self.options.resume else 0
        lineno, line, blank, shown = 0, "\n", 0, 0
        events: list[Event] = []
        entries: list[bytes] = []  # packed, not yet published
        packed = 0  # events in entries
        try:
            if start:
                for lineno, line in lines:
                    blank += not line.strip()
                    if lineno >= start:
                        break
                skipped["checkpoint"] += lineno - blank
            for lineno, line in lines:
                if not lineno & 0x1FFF:
                    self._bar.update(lineno - shown)
                    shown = lineno
                hit = parse(line) if len(line) <= MAX_LINE else None
                if hit is None or not plausible(hit):
                    if line.strip():
                        self._malformed(source.name, lineno, line)
                    else:
                        blank += 1
                    continue
                reason = skip_reason(hit)
                if reason is not None:
                    skipped[reason] += 1
                    continue
                events.append(make(hit, f"{prefix}{lineno:012x}"))
                if len(events) == EVENTS_PER_ENTRY:
                    entries.append(pack(events))
                    packed, events = packed + len(events), []
                    if len(entries) == ENTRIES_PER_PUBLISH:
                        await self._publish(source, entries, packed, lineno)
                        entries, packed = [], 0
        except _READ_ERRORS as exc:
            raise LogImportError(
                f"{source.name}: cannot read after line {lineno}: {exc}; the lines before may be"
                " in the bus already: import the file again (each event counts once) or with"
                " --resume"
            ) from exc
        self._bar.update(lineno - shown)
        if events:
            entries.append(pack(events))
            packed += len(events)
        # A last line without its newline may still be being written: not done yet.
        await self._publish(source, entries, packed, lineno if line.endswith("\n") else lineno - 1)
        while self._in_flight:
            await self._confirm()
        report.read = lineno - blank
        self.summary.read += report.read

    async def _publish(self, source: Source, entries: list[bytes], events: int, line: int) -> None:
        """Send ``entries`` (``events`` in all, up to ``line``) without waiting for Redis,
        unless too many publishes are in flight already."""
        task = asyncio.ensure_future(self.bus.add_packed([(EVENTS, e) for e in entries]))
        self._in_flight.append((task, source, line, events))
        await asyncio.sleep(0)  # let the task write its pipeline while we parse on
        while len(self._in_flight) > IN_FLIGHT:
            await self._confirm()

    async def _confirm(self) -> None:
        """Wait for the oldest publish; then its lines are done and the checkpoint moves on."""
        task, source, line, events = self._in_flight.popleft()
        try:
            await task
        except BusUnavailable as exc:
            done = self.checkpoints.get(source.identity)
            raise LogImportError(
                f"{exc}; the events of {source.name} up to line {done} are in the bus "
                "and --resume goes on after them"
            ) from exc
        self.checkpoints.put(source.identity, source.name, line)
        self.summary.imported += events
        self.summary.files[-1].imported += events

    def _malformed(self, name: str, lineno: int, line: str) -> None:
        self.summary.malformed += 1
        if len(self.summary.examples) < MAX_EXAMPLES:
            self.summary.examples.append(Malformed(name, lineno, _excerpt(line)))
