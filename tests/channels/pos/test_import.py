"""``touchpoint import-pos`` into a real Redis: CSV and NDJSON, bad lines, re-import."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from channels.pos.exports import MAPPINGS, from_csv
from channels.pos.importer import PosImportError, import_pos, read_lines
from channels.pos.transactions import event_id
from gateway import cli
from gateway.bus import Bus
from gateway.config import Config
from gateway.errors import EventError
from gateway.events import Event
from gateway.keys import EVENTS, Keys
from gateway.redis import connect
from tests.channels.pos.common import ENV, STORES, encode, txn

HEADER = "store,terminal,receipt,time,kind,sku,quantity,unit_price,line_discount,total,tender,loyalty_card,email\n"  # noqa: E501
CSV = HEADER + (
    "store-1,till-1,A-1,2026-03-02 10:00:00,sale,SKU-1,2,10.00,1.00,24.50,card,77,\n"
    "store-1,till-1,A-1,,,SKU-2,1,5.50,,,,,\n"  # receipt fields on the first row only
    "store-1,till-1,A-2,2026-03-02 10:05:00,return,SKU-1,1,10.00,,10.00,cash,,ann@example.com\n"
    "store-1,till-1,A-3,2026-03-02 10:06:00,sale,SKU-1,two,10.00,,20.00,cash,,\n"  # bad quantity
    "store-9,till-1,A-4,2026-03-02 10:07:00,sale,SKU-1,1,10.00,,10.00,cash,,\n"  # unknown store
    "\n"
    "store-1,till-1,A-5,2026-03-02 10:08:00,sale,SKU-3,1,3.00,,3.00,cheque,,\n"  # bad tender
    "store-1,till-1,A-6,2026-03-02 10:09:00,void,,,,,0,cash,,\n"
)


@pytest.fixture
def config(make_config: Callable[..., Config], service_redis_url: str, prefix: str) -> Config:
    return make_config(service_redis_url, prefix, STORES, **ENV)


async def stream(config: Config) -> list[Event]:
    client = connect(config.redis.url.get(), timeout=5.0)
    try:
        entries = await Bus(client, Keys(config.redis.prefix), config.bus).latest(EVENTS, 1000)
    finally:
        await client.aclose()
    return [event for entry in reversed(entries) for event in entry.events]


async def test_csv_rows_grouped_by_receipt_with_bad_lines(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(CSV)
    summary = await import_pos(config, str(path), progress=False)
    assert (summary.transactions, summary.imported, summary.duplicates) == (3, 3, 0)
    assert summary.rejected == 3
    assert [(e.line, e.field) for e in summary.errors] == [
        (5, "lines[0].quantity"), (6, "store"), (8, "tender")]  # fmt: skip
    sale, refund, void = await stream(config)
    assert sale.name == "Order Completed" and sale.anonymous_id == "lc-77"
    assert [p["sku"] for p in sale.properties["products"]] == ["SKU-1", "SKU-2"]
    assert sale.properties["revenue"] == 24.5
    assert sale.timestamp.isoformat() == "2026-03-02T09:00:00+00:00"  # store time: Paris
    assert refund.name == "Order Refunded" and refund.properties["revenue"] == -10.0
    assert refund.context["traits"] == {"email": "ann@example.com"}
    assert refund.anonymous_id is not None and refund.anonymous_id.startswith("em-")
    assert "ann" not in refund.anonymous_id
    assert void.name == "Order Voided"

    again = await import_pos(config, str(path), progress=False)
    assert (again.imported, again.duplicates) == (0, 3)
    assert len(await stream(config)) == 3


async def test_ndjson_gzip_same_ids_as_the_http_api(config: Config, tmp_path: Path) -> None:
    path = tmp_path / "backlog.ndjson.gz"
    lines = [encode(txn("N-1")), b'{"store": "store-1"}', encode(txn("N-2", kind="return"))]
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    summary = await import_pos(config, str(path), progress=False)
    assert (summary.imported, summary.rejected, summary.lines) == (2, 1, 3)
    assert summary.errors[0].line == 2 and summary.errors[0].field == "terminal"
    assert [e.event_id for e in await stream(config)] == [
        event_id("store-1", "till-1", "N-1", "sale"),
        event_id("store-1", "till-1", "N-2", "return"),
    ]


async def test_unknown_mapping_and_missing_file(config: Config, tmp_path: Path) -> None:
    with pytest.raises(PosImportError, match="no mapping"):
        await import_pos(config, str(tmp_path / "x.csv"), mapping="nope")
    with pytest.raises(PosImportError, match="cannot read"):
        await import_pos(config, str(tmp_path / "x.csv"), progress=False)
    with pytest.raises(PosImportError, match="--format"):
        await import_pos(config, str(tmp_path / "x.txt"))


def row(receipt: str, sku: str = "SKU-1", quantity: str = "1", total: str = "10.00") -> str:
    when = "2026-03-02 10:00:00"
    return f"store-1,till-1,{receipt},{when},sale,{sku},{quantity},10.00,,{total},card,,\n"


def parse(*rows: str) -> list[tuple[int, str | None, str | None]]:
    """(line, receipt, None) for a transaction, (line, field, reason) for an error."""
    out: list[tuple[int, str | None, str | None]] = []
    for parsed in from_csv([HEADER, *rows], MAPPINGS["lines"]):
        if parsed.transaction is not None:
            out.append((parsed.line, parsed.transaction.receipt, None))
        elif parsed.error is not None:
            out.append((parsed.line, parsed.error.field, parsed.error.reason))
    return out


def test_a_csv_without_a_required_column() -> None:
    with pytest.raises(EventError, match="missing column\\(s\\): time, total, quantity"):
        from_csv(["store,terminal,receipt\n", "a,b,c\n"], MAPPINGS["lines"])


def test_a_field_over_the_csv_limit_rejects_its_receipt_and_the_rest_goes_on() -> None:
    too_long = "S" * 200_000
    assert parse(row("A-1"), row("A-2"), row("A-2", too_long), row("A-2"), row("A-3")) == [
        (2, "A-1", None),
        (4, None, "cannot read the row: field larger than field limit (131072)"),
        (6, "A-3", None),
    ]


def test_rows_of_a_receipt_that_come_back_are_rejected_not_dropped_as_a_duplicate() -> None:
    assert parse(row("A"), row("B"), row("A", "SKU-2"), row("A", "SKU-3")) == [
        (2, "A", None),
        (3, "B", None),
        (4, "receipt", "rows of receipt A must be consecutive: lines 2 and 4"),
    ]
    # A receipt rejected the first time is not imported in part the second.
    assert parse(row("A", quantity="x"), row("B"), row("A")) == [
        (2, "lines[0].quantity", "not a number: 'x'"),
        (3, "B", None),
        (4, "receipt", "rows of receipt A must be consecutive: lines 2 and 4"),
    ]


@pytest.mark.parametrize("number", ["1_0", "1e1", "inf", "nan", "\u0661\u0660"])
def test_numbers_are_plain_decimals(number: str) -> None:
    assert parse(row("A", quantity=number), row("B", total=number)) == [
        (2, "lines[0].quantity", f"not a number: {number!r}"),
        (3, "total", f"not a number: {number!r}"),
    ]
    assert parse(row("A", quantity="2.", total=".5")) == [(2, "A", None)]


def test_a_bad_byte_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    good = [row(f"A-{i}").encode() for i in range(3000)]  # many decode chunks
    for at in (1, 2, 1500, 3001):
        lines = good[:]
        lines.insert(at - 1, b"store-1,till-1,B,2026-03-02 10:00:00,sale,SKU-\xff,1,1,,1,card,,\n")
        path.write_bytes(b"".join(lines))
        with pytest.raises(PosImportError) as caught:
            list(read_lines(str(path)))
        assert str(caught.value) == (
            f"{path}: line {at}: not UTF-8 (byte 0xff: invalid start byte); what came before "
            "may be imported already; fix the file and import it again (what is in counts once)"
        )


def test_a_cut_gzip_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "export.csv.gz"
    data = gzip.compress("".join(row(f"A-{i}") for i in range(3000)).encode())
    path.write_bytes(data[: len(data) // 2])
    readable = zlib.decompressobj(wbits=31).decompress(data[: len(data) // 2]).count(b"\n")
    assert 0 < readable < 3000
    with pytest.raises(PosImportError, match=f"^{path}: cannot read after line {readable}: .*"
                       "import it again \\(what is in counts once\\)$"):  # fmt: skip
        list(read_lines(str(path)))


def test_the_command_prints_a_json_summary(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(CSV)
    code = cli.main(["import-pos", str(path), "--config", config.source, "--json", "--no-progress"])
    assert code == 1  # lines were rejected
    summary = json.loads(capsys.readouterr().out)
    assert (summary["imported"], summary["rejected"]) == (3, 3)
    assert summary["errors"][0] == {
        "line": 5,
        "error": "not a number: 'two'",
        "field": "lines[0].quantity",
    }


def test_the_exit_status_says_whether_lines_were_rejected(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(path: Path, *options: str) -> int:
        args = ["import-pos", str(path), "--config", config.source, "--no-progress", *options]
        return cli.main(args)

    good = tmp_path / "good.csv"
    good.write_text(HEADER + row("G-1") + row("G-2", "S" * 200_000) + row("G-3"))
    assert run(good, "--json") == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["imported"], summary["rejected"], summary["errors"][0]["line"]) == (2, 1, 3)
    good.write_text(HEADER + row("G-1"))
    assert run(good) == 0
    capsys.readouterr()

    ndjson = tmp_path / "backlog.ndjson"
    ndjson.write_bytes(encode(txn("N-1")) + b"\n")
    assert run(ndjson, "--format", "csv") == 2  # before anything is published
    assert capsys.readouterr().err == (
        f"touchpoint: error: {ndjson}: header: missing column(s): "
        "store, terminal, receipt, time, total, quantity\n"
    )
    header = tmp_path / "header.csv"
    header.write_text("store,terminal,receipt,time,sku,quantity\n" + row("H-1"))
    assert run(header) == 2
    assert capsys.readouterr().err.endswith(f"{header}: header: missing column(s): total\n")
    every_line_bad = tmp_path / "bad.ndjson"
    every_line_bad.write_bytes(b'{"store": "store-1"}\n')
    assert run(every_line_bad) == 2  # not one valid transaction
    assert "rejected 1" in capsys.readouterr().out
    assert [e.properties["receipt"] for e in asyncio.run(stream(config))] == ["G-1", "G-3"]
