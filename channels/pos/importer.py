"""``touchpoint import-pos``: a till export (CSV or our NDJSON, plain or gzip) → the bus.

Each valid transaction becomes the event ``/v1/pos/transactions`` would make (same id), so a
file imported twice, or a receipt the till had already sent live, counts once: the ingest
de-duplication (``web.dedup_window``) reports it as a duplicate, the idempotent sinks absorb
it later. Bad lines are listed with their numbers and the rest is imported. The import trusts
whoever runs it: there is no till signature, only stores and terminals must be configured.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import sys
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from tqdm import tqdm  # type: ignore[import-untyped]

from channels.pos.exports import MAPPINGS, Parsed, from_csv, from_ndjson
from channels.pos.transactions import Transaction, to_event
from gateway.bus import Bus
from gateway.config import Config
from gateway.errors import BusUnavailable, EventError, TouchpointError
from gateway.events import Event
from gateway.keys import EVENTS, Keys
from gateway.publisher import Publisher
from gateway.redis import connect, redis_url
from gateway.warehouse.pii import email_hash, pii_key

Format = Literal["csv", "ndjson"]
EVENTS_PER_PUBLISH: Final = 500
IN_FLIGHT: Final = 4
MAX_EXAMPLES: Final = 20
#: Said when an import stops half-way: a re-import adds only what was not in yet.
AGAIN: Final = (
    "what came before may be imported already; fix the file and import it again "
    "(what is in counts once)"
)


class PosImportError(TouchpointError):
    """An import cannot go on: an unreadable file, an unknown mapping, Redis gone."""


@dataclass(frozen=True)
class BadLine:
    line: int
    error: str
    field: str | None


@dataclass
class Summary:
    """What an import did; ``transactions == imported + duplicates``."""

    file: str
    format: str
    transactions: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    lines: int = 0
    errors: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lines_per_second(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["lines_per_second"] = round(self.lines_per_second)
        return data

    def text(self) -> str:
        rate = f"{self.seconds:.1f} s ({self.lines_per_second:,.0f} lines/s)"
        out = [
            f"{self.file} ({self.format}): {self.lines:,} lines in {rate}",
            f"{self.transactions:,} transactions: {self.imported:,} imported, "
            f"{self.duplicates:,} already there",
            f"rejected {self.rejected:,}" + (", the first:" if self.errors else ""),
        ]
        out += [
            f"  line {e.line}: {e.field + ': ' if e.field else ''}{e.error}" for e in self.errors
        ]
        return "\n".join(out)


def format_of(path: str, given: str | None) -> Format:
    if given in ("csv", "ndjson"):
        return given  # type: ignore[return-value]
    name = path.removesuffix(".gz").lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    raise PosImportError(f"{path}: cannot tell the format from the name; give --format")


def read_lines(path: str) -> Generator[str, None, None]:
    """The file's lines (``\n`` kept), gunzipped when it starts with gzip's magic bytes.

    The file is opened now, so a missing one is an error before any work starts."""
    try:
        raw = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise PosImportError(f"{path}: cannot read: {exc.strerror}") from exc
    return _lines(path, raw)


def _lines(path: str, raw: Any) -> Generator[str, None, None]:
    stream: Any = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    number = 0  # lines given so far
    try:
        for line in text:
            number += 1
            yield line
    except UnicodeDecodeError as exc:
        # exc.start is in the chunk being decoded, which starts on the line after the last one
        # given (every whole line decoded before was given).
        at = number + 1 + exc.object.count(b"\n", 0, exc.start)
        bad = f"byte 0x{exc.object[exc.start]:02x}: {exc.reason}"
        raise PosImportError(f"{path}: line {at}: not UTF-8 ({bad}); {AGAIN}") from exc
    except (OSError, EOFError) as exc:
        raise PosImportError(f"{path}: cannot read after line {number}: {exc}; {AGAIN}") from exc
    finally:
        text.close()
        raw.close()


def events_of(
    parsed: Iterable[Parsed], config: Config, key: bytes, summary: Summary
) -> Iterator[Event]:
    """Events of the valid transactions; the bad ones are counted and listed in ``summary``."""
    now = datetime.now(UTC)
    for item in parsed:
        error = item.error
        if item.transaction is not None:
            try:
                yield _event(item.transaction, config, key, now)
                summary.transactions += 1
                continue
            except EventError as exc:
                error = exc
        assert error is not None
        summary.rejected += 1
        if len(summary.errors) < MAX_EXAMPLES:
            summary.errors.append(BadLine(item.line, error.reason, error.field))


def _event(txn: Transaction, config: Config, key: bytes, now: datetime) -> Event:
    store = config.stores.get(txn.store)
    if store is None:
        raise EventError(f"no store {txn.store!r} in the configuration", "store")
    if txn.terminal not in store.terminals:
        raise EventError(f"no terminal {txn.terminal!r} in store {txn.store!r}", "terminal")
    return to_event(txn, store, received_at=now, email_hash=email_hash(key, txn.email))


async def import_pos(
    config: Config,
    path: str,
    *,
    format: str | None = None,
    mapping: str | None = None,
    progress: bool = True,
) -> Summary:
    fmt = format_of(path, format)
    if fmt == "csv" and (mapping or "lines") not in MAPPINGS:
        known = ", ".join(sorted(MAPPINGS))
        raise PosImportError(f"no mapping {mapping!r} (known: {known})")
    summary = Summary(path, fmt if fmt == "ndjson" else f"csv, mapping {mapping or 'lines'}")
    source = read_lines(path)
    bar = tqdm(unit=" lines", file=sys.stderr, disable=not progress, leave=False, mininterval=0.5)

    def counted() -> Iterator[str]:
        for line in source:
            summary.lines += 1
            if not summary.lines & 0x3FF:
                bar.update(1024)
            yield line

    lines = counted()
    try:
        parsed = (
            from_ndjson(lines) if fmt == "ndjson" else from_csv(lines, MAPPINGS[mapping or "lines"])
        )
    except EventError as exc:  # a CSV header without a required column: nothing to import
        bar.close()
        source.close()
        raise PosImportError(f"{path}: {exc}") from exc
    started = time.perf_counter()
    async with redis_url(config) as url:
        client = connect(url, timeout=max(config.redis.timeout, 10.0))
        publisher = Publisher(
            Bus(client, Keys(config.redis.prefix), config.bus),
            timeout=max(config.redis.timeout, 10.0),
        )
        publisher.start()
        try:
            await _publish(publisher, events_of(parsed, config, pii_key(config), summary), summary,
                           config.web.dedup_window)  # fmt: skip
        finally:
            bar.close()
            await publisher.close()
            await client.aclose()
    summary.seconds = time.perf_counter() - started
    return summary


async def _publish(
    publisher: Publisher, events: Iterator[Event], summary: Summary, dedup: float
) -> None:
    """Publish in chunks, a few in flight while parsing goes on."""
    in_flight: deque[asyncio.Task[Any]] = deque()

    async def confirm() -> None:
        try:
            published = await in_flight.popleft()
        except BusUnavailable as exc:
            raise PosImportError(f"{exc}; import the file again (what is in counts once)") from exc
        summary.imported += published.events
        summary.duplicates += published.duplicates

    try:
        chunk: list[Event] = []
        for event in events:
            chunk.append(event)
            if len(chunk) == EVENTS_PER_PUBLISH:
                in_flight.append(
                    asyncio.ensure_future(publisher.publish(EVENTS, chunk, dedup=dedup))
                )
                chunk = []
                await asyncio.sleep(0)
                while len(in_flight) > IN_FLIGHT:
                    await confirm()
        if chunk:
            in_flight.append(asyncio.ensure_future(publisher.publish(EVENTS, chunk, dedup=dedup)))
        while in_flight:
            await confirm()
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
