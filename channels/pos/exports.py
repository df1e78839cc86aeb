"""Till exports → transactions. Plain functions over lines of text, no I/O.

Two shapes: our own NDJSON (one :class:`~channels.pos.transactions.Transaction` per line, what
``/v1/pos/batch`` takes) and CSV with one row per line item, consecutive rows of one receipt
grouped into one transaction (what most tills export). A :class:`Mapping` names the CSV's
columns; receipt-level columns (time, total, tender...) are read from the first row of the
receipt that has them, so exports that fill them on the first row only fit too. Rows of a
receipt that come back after another receipt's are refused, not merged: grouping them would
mean holding the whole file before publishing anything.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from channels.pos.transactions import Transaction, check, decode, field_error
from gateway.errors import EventError

#: Transaction fields read from a receipt's rows (first non-empty value wins).
RECEIPT_FIELDS: Final = (
    "kind", "time", "total", "subtotal", "tax", "discount", "currency", "tender",
    "loyalty_card", "email", "original_receipt",
)  # fmt: skip
LINE_FIELDS: Final = ("sku", "product_id", "name", "category", "quantity", "unit_price", "discount")
NUMBERS: Final = frozenset({"total", "subtotal", "tax", "discount", "quantity", "unit_price"})


@dataclass(frozen=True)
class Mapping:
    """Column names of a CSV export: transaction field → column (``line.`` for line items)."""

    name: str
    columns: dict[str, str]
    #: Values of the kind column → sale, return, void.
    kinds: dict[str, str] = field(default_factory=dict)
    #: Decimal comma (``12,50``).
    decimal_comma: bool = False


MAPPINGS: Final[dict[str, Mapping]] = {
    # One row per item: our column names, as documented in the README.
    "lines": Mapping(
        "lines",
        {
            **{f: f for f in ("store", "terminal", "receipt", *RECEIPT_FIELDS)},
            **{f"line.{f}": f for f in LINE_FIELDS if f != "discount"},
            "line.discount": "line_discount",
        },
    ),
}


@dataclass(frozen=True)
class Parsed:
    """A transaction and the line it starts on; or the error and the line at fault."""

    line: int
    transaction: Transaction | None = None
    error: EventError | None = None


def from_ndjson(lines: Iterable[str]) -> Iterator[Parsed]:
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            yield Parsed(number, decode(text))
        except EventError as exc:
            yield Parsed(number, error=exc)


def from_csv(lines: Iterable[str], mapping: Mapping) -> Iterator[Parsed]:
    """Rows grouped by (store, terminal, receipt); line numbers count the header as line 1.

    The header is read now: EventError (field ``header``) when it lacks a required column."""
    rows = _rows(lines)
    first = next(rows, None)
    if first is None:
        return iter(())
    _, header, error = first
    if error is not None:
        raise EventError(error.reason, "header")
    index = {name.strip(): i for i, name in enumerate(header)}
    missing = [c for f, c in mapping.columns.items() if f in _REQUIRED and c not in index]
    if missing:
        raise EventError(f"missing column(s): {', '.join(missing)}", "header")
    columns = {f: index[c] for f, c in mapping.columns.items() if c in index}
    return _grouped(rows, columns, mapping)


def _grouped(
    rows: Iterator[tuple[int, list[str], EventError | None]],
    columns: dict[str, int],
    mapping: Mapping,
) -> Iterator[Parsed]:
    group: list[tuple[int, dict[str, str]]] = []
    unreadable: Parsed | None = None  # the group's first row the reader could not read
    seen: dict[tuple[str | None, ...], int] = {}  # receipt → the line its rows start on
    for number, row, error in rows:
        if error is None and not any(cell.strip() for cell in row):
            continue
        values = {f: row[i].strip() for f, i in columns.items() if i < len(row) and row[i].strip()}
        if group and _receipt(group[0][1]) != _receipt(values):
            yield _checked(group, mapping, unreadable, seen)
            group, unreadable = [], None
        group.append((number, values))
        if error is not None and unreadable is None:
            unreadable = Parsed(number, error=error)
    if group:
        yield _checked(group, mapping, unreadable, seen)


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str], EventError | None]]:
    """Rows and the line they end on. A row the reader refuses (a field over
    ``csv.field_size_limit()``) comes with its error and the cells of its line that fit, so
    that it still rejects its receipt."""
    last = ""

    def tapped() -> Iterator[str]:
        nonlocal last
        for line in lines:
            last = line
            yield line

    reader = csv.reader(tapped())
    while True:
        try:
            for row in reader:
                yield reader.line_num, row, None
            return
        except csv.Error as exc:
            yield reader.line_num, _cut(last), EventError(f"cannot read the row: {exc}")


def _cut(line: str) -> list[str]:
    """The cells of ``line`` up to the field too long to read, which is cut short."""
    try:
        return next(csv.reader([line[: csv.field_size_limit() - 1]]), [])
    except csv.Error:
        return []


def _checked(
    group: list[tuple[int, dict[str, str]]],
    mapping: Mapping,
    unreadable: Parsed | None,
    seen: dict[tuple[str | None, ...], int],
) -> Parsed:
    """The group's transaction, unless a row was unreadable or the receipt came before: that
    would be the same event again, its rows lost as a duplicate."""
    first, key = group[0][0], _receipt(group[0][1])
    earlier = seen.setdefault(key, first)
    parsed = unreadable or _transaction(group, mapping)
    if earlier != first and parsed.transaction is not None:
        reason = f"rows of receipt {key[2]} must be consecutive: lines {earlier} and {first}"
        return Parsed(first, error=EventError(reason, "receipt"))
    return parsed


_REQUIRED: Final = frozenset({"store", "terminal", "receipt", "time", "total", "line.quantity"})


def _receipt(values: dict[str, str]) -> tuple[str | None, ...]:
    return values.get("store"), values.get("terminal"), values.get("receipt")


def _transaction(group: list[tuple[int, dict[str, str]]], mapping: Mapping) -> Parsed:
    first = group[0][0]
    head = group[0][1]
    data: dict[str, Any] = {k: head[k] for k in ("store", "terminal", "receipt") if k in head}
    try:
        for name in RECEIPT_FIELDS:
            value = next((v[name] for _, v in group if name in v), None)
            if value is not None:
                data[name] = _value(name, value, mapping)
        if "kind" in data:
            data["kind"] = mapping.kinds.get(data["kind"], data["kind"]).lower()
    except EventError as exc:
        return Parsed(first, error=exc)
    data["lines"] = []
    for i, (number, v) in enumerate(group):
        try:
            line = {f: _value(f, v[f"line.{f}"], mapping) for f in LINE_FIELDS if f"line.{f}" in v}
        except EventError as exc:
            return Parsed(number, error=EventError(exc.reason, f"lines[{i}].{exc.field}"))
        if line:  # a void's row may name no item
            data["lines"].append(line)
    try:
        txn = msgspec.convert(data, Transaction, strict=False)
        check(txn)
    except msgspec.ValidationError as exc:
        error = field_error(exc)
        return Parsed(_line_of(error, group), error=error)
    except EventError as exc:
        return Parsed(_line_of(exc, group), error=exc)
    return Parsed(first, txn)


def _value(name: str, raw: str, mapping: Mapping) -> Any:
    if name not in NUMBERS:
        return raw
    text = raw.replace(",", ".") if mapping.decimal_comma else raw
    # Plain decimals only: float() also takes 1_0, 1e3, inf, nan and digits of any script.
    if text.strip("0123456789.+-"):
        raise EventError(f"not a number: {raw!r}", name)
    try:
        return float(text)
    except ValueError:
        raise EventError(f"not a number: {raw!r}", name) from None


def _line_of(error: EventError, group: list[tuple[int, dict[str, str]]]) -> int:
    """The row a ``lines[i]...`` error is about; else the receipt's first row."""
    if error.field and error.field.startswith("lines["):
        i = int(error.field[6:].split("]", 1)[0])
        if i < len(group):
            return group[i][0]
    return group[0][0]
