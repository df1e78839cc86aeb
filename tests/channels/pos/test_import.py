"""``touchpoint import-pos`` into a real Redis: CSV and NDJSON, bad lines, re-import."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from channels.pos.exports import MAPPINGS, from_csv
from channels.pos.importer import PosImportError, import_pos
from channels.pos.transactions import event_id
from gateway import cli
from gateway.bus import Bus
from gateway.config import Config
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


def test_a_csv_without_a_required_column() -> None:
    (parsed,) = from_csv(["store,terminal,receipt\n", "a,b,c\n"], MAPPINGS["lines"])
    assert parsed.error is not None and parsed.error.field == "header"
    assert "total" in parsed.error.reason


def test_the_command_prints_a_json_summary(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(CSV)
    code = cli.main(["import-pos", str(path), "--config", config.source, "--json", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["imported"], summary["rejected"]) == (3, 3)
    assert summary["errors"][0] == {
        "line": 5,
        "error": "not a number: 'two'",
        "field": "lines[0].quantity",
    }
