"""Named cube queries: measures x dimensions x filters over the star schema, on either engine.

Everything but :func:`run` is sans-I/O: :func:`parse_query` checks names and values,
:func:`compile` writes one SQL statement per fact table the measures come from (grouped by the
same dimensions), and :func:`merge` joins their rows on the dimension values. A dimension or a
filter a fact table does not have is an error naming both (never a silent NULL): "sessions by
store" has no answer, and a filter that could not apply must not be ignored.

Times are UTC; ``from`` is inclusive and ``to`` exclusive (ISO dates), both on ``date_key``.
Dimension values come out as ``day`` 2026-01-05, ``hour`` 2026-01-05T13:00, ``week``
2026-W02 (ISO), ``month`` 2026-01, the others as stored; filters take the same spelling.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Literal

from gateway.errors import OlapError
from gateway.warehouse.base import Warehouse

# --- the catalog ---------------------------------------------------------------------------------

Join = Literal["date", "segment"] | None


@dataclass(frozen=True)
class Dimension:
    #: What a filter value becomes as an SQL parameter; what an SQL value becomes in a result.
    parse: Callable[[str], Any] = str
    show: Callable[[Any], Any] = lambda value: value
    join: Join = None


@dataclass(frozen=True)
class Fact:
    table: str
    #: Dimension → SQL over the fact ``f`` (``d``: its dim_date row, ``s``: customer_segment).
    dims: Mapping[str, str]
    where: str | None = None


@dataclass(frozen=True)
class Measure:
    fact: str
    sql: str
    kind: Literal["count", "sum", "ratio"]


def _day(value: str) -> int:
    return _key(date.fromisoformat(value))


def _show_day(value: int) -> str:
    return f"{value // 10_000:04}-{value // 100 % 100:02}-{value % 100:02}"


def _show_hour(value: int) -> str:
    return f"{_show_day(value // 100)}T{value % 100:02}:00"


def _hour(value: str) -> int:
    moment = datetime.fromisoformat(value if ":" in value else f"{value}:00")
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # year 1 ahead of UTC, 9999 behind it
            raise ValueError("out of range in UTC") from None
    return _key(moment.date()) * 100 + moment.hour


def _pattern(regex: str, spelling: str, last: Callable[[int], int]) -> Callable[[str], int]:
    """Parses ``spelling``: a year and a number from 1 to ``last(year)``."""
    compiled = re.compile(regex)

    def parse(value: str) -> int:
        if not (match := compiled.fullmatch(value)):
            raise ValueError(f"expected {spelling}")
        year, number = int(match[1]), int(match[2])
        if not 1 <= number <= last(year):
            raise ValueError(f"{value} does not exist")
        return year * 100 + number

    return parse


def _weeks(year: int) -> int:
    """ISO weeks in ``year`` (52 or 53: the week of 28 December is its last)."""
    return date(year, 12, 28).isocalendar().week


#: Dimensions whose values are the stored ones.
_PLAIN: Final = ("channel", "site", "store", "product", "category", "campaign")
#: What a visit is seen from (events and sessions have these).
_VISIT: Final = ("device_type", "browser", "os", "country", "referrer_class")

DIMENSIONS: Final[dict[str, Dimension]] = {
    "hour": Dimension(_hour, _show_hour),
    "day": Dimension(_day, _show_day),
    "week": Dimension(
        _pattern(r"(\d{4})-W(\d{2})", "YYYY-Www", _weeks),
        lambda v: f"{v // 100:04}-W{v % 100:02}",
        "date",
    ),
    "month": Dimension(
        _pattern(r"(\d{4})-(\d{2})", "YYYY-MM", lambda _: 12),
        lambda v: f"{v // 100:04}-{v % 100:02}",
        "date",
    ),
    "segment": Dimension(join="segment"),
    **{name: Dimension() for name in (*_PLAIN, *_VISIT)},
}


def _shared(column: str) -> dict[str, str]:
    """The dimensions every fact has: time (from ``column`` and ``date_key``) and segment."""
    return {
        "hour": f"CAST(f.date_key AS BIGINT) * 100 + CAST(extract(hour FROM f.{column}) AS BIGINT)",
        "day": "f.date_key",
        "week": "d.iso_year * 100 + d.iso_week",
        "month": "d.year * 100 + d.month",
        "segment": "s.segment",
    }


def _columns(*names: str, **renamed: str) -> dict[str, str]:
    return {**{name: f"f.{name}" for name in names}, **{k: f"f.{v}" for k, v in renamed.items()}}


FACTS: Final[dict[str, Fact]] = {
    "fact_event": Fact(
        "fact_event",
        {
            **_shared("ts"),
            **_columns("channel", "site", "category", "campaign", *_VISIT),
            **_columns(store="store_id", product="sku"),
        },
        where="f.is_bot IS NOT TRUE",
    ),
    # Bots are kept for reports, out of every other measure.
    "fact_event_bots": Fact(
        "fact_event",
        {
            **_shared("ts"),
            **_columns("channel", "site", "category", "campaign", *_VISIT),
            **_columns(store="store_id", product="sku"),
        },
        where="f.is_bot",
    ),
    "fact_session": Fact(
        "fact_session",
        {**_shared("started_at"), **_columns("channel", "site", "campaign", *_VISIT)},
    ),
    "fact_sale": Fact(
        "fact_sale",
        {
            **_shared("ts"),
            **_columns("channel", "site", "category"),
            **_columns(store="store_id", product="sku"),
        },
    ),
    "fact_message": Fact(
        "fact_message", {**_shared("ts"), **_columns("channel", campaign="campaign_id")}
    ),
}

_SIGNED = "CASE WHEN f.kind = 'return' THEN -abs(f.{0}) ELSE f.{0} END"


def _share(flag: str) -> str:
    return f"CAST(avg(CASE WHEN f.{flag} THEN 1.0 ELSE 0.0 END) AS DOUBLE PRECISION)"


def _status(status: str) -> Measure:
    return Measure("fact_message", f"count(CASE WHEN f.status = '{status}' THEN 1 END)", "count")


MEASURES: Final[dict[str, Measure]] = {
    "events": Measure("fact_event", "count(*)", "count"),
    "visitors": Measure(
        "fact_event", "count(DISTINCT coalesce(f.customer_id, f.anonymous_id))", "count"
    ),
    "bot_events": Measure("fact_event_bots", "count(*)", "count"),
    "sessions": Measure("fact_session", "count(*)", "count"),
    "bounce_rate": Measure("fact_session", _share("bounced"), "ratio"),
    "conversion_rate": Measure("fact_session", _share("converted"), "ratio"),
    "orders": Measure(
        "fact_sale", "count(DISTINCT CASE WHEN f.kind = 'sale' THEN f.order_id END)", "count"
    ),
    "revenue": Measure(
        "fact_sale",
        f"CAST(coalesce(sum({_SIGNED.format('revenue')}), 0) AS DOUBLE PRECISION)",
        "sum",
    ),
    "units": Measure(
        "fact_sale",
        f"CAST(coalesce(sum({_SIGNED.format('quantity')}), 0) AS DOUBLE PRECISION)",
        "sum",
    ),
    **{
        f"messages_{status}": _status(status)
        for status in ("sent", "delivered", "opened", "clicked", "unsubscribed", "bounced")
    },
}

# --- queries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    measures: tuple[str, ...]
    dims: tuple[str, ...] = ()
    #: (dimension, parsed values): values of one filter are OR-ed, filters AND-ed.
    filters: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    start: date | None = None
    end: date | None = None


def _names(values: str | Sequence[str]) -> list[str]:
    items = [values] if isinstance(values, str) else values
    return [name.strip() for item in items for name in item.split(",") if name.strip()]


def _choices(catalog: Mapping[str, Any]) -> str:
    return ", ".join(catalog)


def parse_query(
    measures: str | Sequence[str],
    dims: str | Sequence[str] = (),
    filters: Sequence[str] = (),
    start: str | None = None,
    end: str | None = None,
) -> Query:
    """A checked query from its spelling (``"events,visitors"``, ``["channel=web,email"]``)."""
    wanted = list(dict.fromkeys(_names(measures)))
    if not wanted:
        raise OlapError(f"no measure given (one or more of: {_choices(MEASURES)})", "measures")
    for name in wanted:
        if name not in MEASURES:
            raise OlapError(f"unknown measure {name!r} (known: {_choices(MEASURES)})", "measures")
    by = list(dict.fromkeys(_names(dims)))
    for name in by:
        if name not in DIMENSIONS:
            raise OlapError(f"unknown dimension {name!r} (known: {_choices(DIMENSIONS)})", "dims")
    return Query(
        tuple(wanted),
        tuple(by),
        tuple(_filter(text) for item in filters for text in item.split(";") if text.strip()),
        _date(start, "from"),
        _date(end, "to"),
    )


def _filter(text: str) -> tuple[str, tuple[Any, ...]]:
    name, sep, values = (part.strip() for part in text.partition("="))
    if not sep or not name:
        raise OlapError(f"filter {text.strip()!r} is not dimension=value[,value...]", "filters")
    if name not in DIMENSIONS:
        raise OlapError(
            f"unknown filter dimension {name!r} (known: {_choices(DIMENSIONS)})", "filters"
        )
    spelled = [v.strip() for v in values.split(",") if v.strip()]
    if not spelled:
        raise OlapError(f"filter {name!r} has no value", "filters")
    try:
        return name, tuple(dict.fromkeys(DIMENSIONS[name].parse(v) for v in spelled))
    except ValueError as exc:
        raise OlapError(
            f"filter {name!r}: bad value in {values.strip()!r}: {exc}", "filters"
        ) from None


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise OlapError(f"{name}: {value!r} is not an ISO date (YYYY-MM-DD)", name) from None


# --- SQL -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    fact: str
    measures: tuple[str, ...]
    sql: str
    params: list[Any] = field(default_factory=list)


def compile(query: Query, max_rows: int | None = None) -> list[Statement]:
    """One statement per fact table the measures need, each grouped by ``query.dims``
    (columns ``d0, d1...`` then ``m0, m1...``)."""
    if query.start and query.end and query.start >= query.end:
        raise OlapError(f"from ({query.start}) must be before to ({query.end})", "from")
    by_fact: dict[str, list[str]] = {}
    for name in query.measures:
        by_fact.setdefault(MEASURES[name].fact, []).append(name)
    return [_statement(query, FACTS[f], tuple(m), max_rows) for f, m in by_fact.items()]


def _statement(
    query: Query, fact: Fact, measures: tuple[str, ...], max_rows: int | None
) -> Statement:
    used = [*query.dims, *(name for name, _ in query.filters)]
    for name in used:
        if name not in fact.dims:
            raise OlapError(
                f"dimension {name!r} does not apply to measure {measures[0]!r} "
                f"({fact.table} has no {name})",
                "dims" if name in query.dims else "filters",
            )
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    select = [f"{fact.dims[d]} AS d{i}" for i, d in enumerate(query.dims)]
    select += [f"{MEASURES[m].sql} AS m{i}" for i, m in enumerate(measures)]
    joins = []
    if any(DIMENSIONS[name].join == "date" for name in used):
        joins.append("JOIN dim_date d ON d.date_key = f.date_key")
    if "segment" in query.dims:
        joins.append("LEFT JOIN customer_segment s ON s.customer_id = f.customer_id")
    where = [fact.where] if fact.where else []
    if query.start:
        where.append(f"f.date_key >= {param(_key(query.start))}")
    if query.end:
        where.append(f"f.date_key < {param(_key(query.end))}")
    for name, values in query.filters:
        listed = ", ".join(param(v) for v in values)
        if name == "segment" and "segment" not in query.dims:
            where.append(
                "EXISTS (SELECT 1 FROM customer_segment s "
                f"WHERE s.customer_id = f.customer_id AND s.segment IN ({listed}))"
            )
        else:
            where.append(f"{fact.dims[name]} IN ({listed})")
    sql = f"SELECT {', '.join(select)} FROM {fact.table} f"
    sql += "".join(f" {join}" for join in joins)
    if where:
        sql += " WHERE " + " AND ".join(where)
    if query.dims:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(query.dims)))
        if max_rows is not None:
            sql += f" LIMIT {int(max_rows) + 1}"
    return Statement(fact.table, measures, sql, params)


def _key(day: date) -> int:
    return day.year * 10_000 + day.month * 100 + day.day


# --- results -------------------------------------------------------------------------------------

_EMPTY: Final[dict[str, Any]] = {"count": 0, "sum": 0.0, "ratio": None}


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[list[Any]]
    #: Per column: ``dimension`` or the measure's kind (how :meth:`as_table` shows it).
    kinds: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows}

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        writer.writerows(["" if v is None else v for v in row] for row in self.rows)
        return out.getvalue()

    def as_table(self) -> str:
        """Aligned plain text: text left, numbers right."""
        kinds = self.kinds or ["dimension"] * len(self.columns)
        shown = ([_cell(v, k) for v, k in zip(row, kinds, strict=True)] for row in self.rows)
        cells = [self.columns, *shown]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        numeric = [
            bool(self.rows) and all(isinstance(r[i], int | float | None) for r in self.rows)
            for i in range(len(self.columns))
        ]
        lines = []
        for row in cells:
            parts = [
                c.rjust(w) if n else c.ljust(w)
                for c, w, n in zip(row, widths, numeric, strict=True)
            ]
            lines.append("  ".join(parts).rstrip())
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if kind == "ratio" else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _plain(value: Any) -> Any:
    """Driver values → JSON-ready ones (PostgreSQL numerics come as Decimal)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _measure(value: Any, kind: str) -> Any:
    if value is None:
        return _EMPTY[kind]
    return int(value) if kind == "count" else float(value)


def merge(
    query: Query,
    statements: Sequence[Statement],
    results: Sequence[Sequence[Mapping[str, Any]]],
    max_rows: int | None = None,
) -> Result:
    """The rows of every statement joined on their dimension values, sorted by them; a
    measure a fact has no row for is 0 (counts, sums) or null (ratios)."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for statement, fetched in zip(statements, results, strict=True):
        for row in fetched:
            key = tuple(_plain(row[f"d{i}"]) for i in range(len(query.dims)))
            slot = merged.setdefault(key, {})
            for i, name in enumerate(statement.measures):
                slot[name] = _measure(_plain(row[f"m{i}"]), MEASURES[name].kind)
    if max_rows is not None and len(merged) > max_rows:
        raise OlapError(
            f"the result has more than {max_rows} rows (warehouse.max_rows): "
            "use fewer dimensions, filters or a shorter period",
            "dims",
        )
    rows = []
    for key in sorted(merged, key=lambda k: tuple((v is None, v) for v in k)):
        slot = merged[key]
        shown = [
            None if v is None else DIMENSIONS[d].show(v)
            for d, v in zip(query.dims, key, strict=True)
        ]
        rows.append(shown + [slot.get(m, _EMPTY[MEASURES[m].kind]) for m in query.measures])
    kinds = ["dimension"] * len(query.dims) + [MEASURES[m].kind for m in query.measures]
    return Result([*query.dims, *query.measures], rows, kinds)


async def run(warehouse: Warehouse, query: Query, max_rows: int | None = None) -> Result:
    """Compile, run the statements concurrently (one per fact table), merge."""
    statements = compile(query, max_rows)
    results = await asyncio.gather(*(warehouse.fetch(s.sql, s.params) for s in statements))
    return merge(query, statements, results, max_rows)
