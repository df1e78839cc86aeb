"""The one interface both engines implement, and what they share: the tables' shape (read back
from the database, so the migrations stay the only definition) and the preparation of rows
for a bulk load (checked, converted, de-duplicated on the primary key; no I/O)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

from gateway.errors import WarehouseError


class Warehouse(Protocol):
    """The star schema on one engine. Loads are idempotent on primary keys; SQL given to
    :meth:`fetch` and :meth:`execute` uses ``$1, $2`` placeholders (both engines take them)."""

    engine: str

    async def migrate(self) -> list[int]:
        """Apply the migrations not applied yet; return their versions (``[]``: up to date)."""
        ...

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Add rows whose key is new (``ON CONFLICT DO NOTHING``); return how many were added."""
        ...

    async def upsert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Add rows, or update the other columns given of those whose key exists."""
        ...

    async def insert_records(self, loads: Sequence[Records]) -> list[int]:
        """:meth:`insert` for rows given as tuples, several tables in one transaction (all in
        or all out); how many rows each load added."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a query; rows as dicts (JSON columns decoded)."""
        ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a write (an erasure, a clean-up) in turn with the loads."""
        ...

    async def close(self) -> None:
        """Finish what runs and release files and connections; idempotent."""
        ...


# --- the shape of the tables ---------------------------------------------------------------------

Kind = Literal["text", "int", "bigint", "double", "bool", "date", "timestamptz", "json", "other"]

#: ``information_schema.columns.data_type`` as DuckDB and PostgreSQL spell it → a kind.
_KINDS: Final[dict[str, Kind]] = {
    "varchar": "text",
    "character varying": "text",
    "text": "text",
    "integer": "int",
    "bigint": "bigint",
    "double": "double",
    "double precision": "double",
    "boolean": "bool",
    "date": "date",
    "timestamp with time zone": "timestamptz",
    "json": "json",
    "jsonb": "json",
}

COLUMNS_SQL: Final = """
SELECT table_name, column_name, data_type FROM information_schema.columns
WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"""

KEYS_SQL: Final = """
SELECT tc.table_name, kcu.column_name
FROM information_schema.table_constraints tc
JOIN information_schema.key_column_usage kcu
  ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
 AND kcu.table_name = tc.table_name
WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()
ORDER BY tc.table_name, kcu.ordinal_position"""

#: Columns a ``date_key`` is derived from when a row leaves it out.
TIME_COLUMNS: Final = ("ts", "started_at")


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Kind]
    key: tuple[str, ...]


def tables_from(
    columns: Iterable[Mapping[str, Any]], keys: Iterable[Mapping[str, Any]]
) -> dict[str, Table]:
    """Tables from the rows of :data:`COLUMNS_SQL` and :data:`KEYS_SQL`."""
    shapes: dict[str, dict[str, Kind]] = {}
    for row in columns:
        kind = _KINDS.get(str(row["data_type"]).lower(), "other")
        shapes.setdefault(row["table_name"], {})[row["column_name"]] = kind
    primary: dict[str, list[str]] = {}
    for row in keys:
        primary.setdefault(row["table_name"], []).append(row["column_name"])
    return {
        name: Table(name, shape, tuple(primary.get(name, ()))) for name, shape in shapes.items()
    }


def table_named(tables: Mapping[str, Table], name: str) -> Table:
    table = tables.get(name)
    if table is None:
        raise WarehouseError(f"unknown table {name!r} (run `touchpoint warehouse migrate`?)")
    if not table.key:
        raise WarehouseError(f"table {name!r} has no primary key: loads need one")
    return table


def date_key(ts: datetime) -> int:
    """The UTC day of ``ts`` as YYYYMMDD (naive datetimes are taken as UTC)."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return ts.year * 10_000 + ts.month * 100 + ts.day


# --- rows → a batch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Records:
    """Rows of ``table`` as tuples in the order of ``columns``: what a producer that knows its
    columns hands over (no dict per row; a bulk load takes the columns as they are)."""

    table: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Batch:
    """Rows ready to load: checked and converted, column by column (Arrow wants columns; COPY
    zips them back), or a producer's rows as they are (:func:`record_batches`)."""

    table: Table
    columns: tuple[str, ...]
    data: list[list[Any]]
    #: The rows as given, unchecked (``data`` is empty then): an engine that finds a value its
    #: column does not take as is raises :class:`Refused`.
    rows: Sequence[tuple[Any, ...]] | None = None

    def records(self) -> Sequence[tuple[Any, ...]]:
        if self.rows is not None:
            return self.rows
        return list(zip(*self.data, strict=True))


class Refused(WarehouseError):
    """An unchecked batch holds a value its column does not take as is: load the checked one."""


def prepare(table: Table, rows: Sequence[Mapping[str, Any]], *, keep_last: bool) -> list[Batch]:
    """Check and convert ``rows`` for ``table``: one batch per set of columns the rows give
    (a column a row leaves out keeps its value, or gets its default, never a NULL meant for
    another row). Of rows sharing a key, a batch keeps the first (insert) or the last
    (upsert): one statement may not touch a row twice.

    A missing ``date_key`` is derived from ``ts`` / ``started_at``; JSON values that are not
    already text are dumped; ISO strings are taken for timestamps and dates.
    """
    groups: dict[frozenset[str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    return [
        _batch(table, given, _getter(group), len(group), keep_last)
        for given, group in groups.items()
    ]


def _getter(rows: list[Mapping[str, Any]]) -> Callable[[str], list[Any]]:
    return lambda column: list(map(itemgetter(column), rows))


def prepare_records(table: Table, records: Records, *, keep_last: bool) -> Batch:
    """:func:`prepare` for rows given as tuples (one set of columns, so one batch)."""
    given = frozenset(records.columns)
    if len(given) != len(records.columns):
        raise WarehouseError(f"{table.name}: a column is named twice")
    width = len(records.columns)
    if any(len(row) != width for row in records.rows):
        raise WarehouseError(f"{table.name}: every row needs {width} values")
    given_data = dict(zip(records.columns, map(list, zip(*records.rows, strict=True)), strict=True))
    return _batch(table, given, given_data.__getitem__, len(records.rows), keep_last)


def record_batches(
    tables: Sequence[Table | None], loads: Sequence[Records], *, checked: bool
) -> list[list[Batch]]:
    """The batches of ``loads`` (``tables`` their tables, None for a load without rows).

    Unchecked (the bulk path: a producer such as :func:`gateway.agents.facts.fact_records`
    gives every column its type), each load's rows go as they are, without a pass over every
    value; an engine refusing one of them raises :class:`Refused`, and the caller loads the
    checked batches instead (:func:`prepare_records`: values converted where they can be, else
    an error naming the column). Loads with columns to derive (``date_key``) are always checked.
    Rows sharing a key are left to the load: an insert's ``ON CONFLICT DO NOTHING`` keeps one.
    """
    out: list[list[Batch]] = []
    for table, records in zip(tables, loads, strict=True):
        if table is None or not records.rows:
            out.append([])
        elif checked or not _as_given(table, records.columns):
            out.append([prepare_records(table, records, keep_last=False)])
        else:
            out.append([Batch(table, records.columns, [], records.rows)])
    return out


def _as_given(table: Table, columns: tuple[str, ...]) -> bool:
    """Whether rows giving ``columns`` can load as they are: known columns, each once, the key
    among them and nothing to derive."""
    given = frozenset(columns)
    derive = "date_key" in table.columns and "date_key" not in given and given & {*TIME_COLUMNS}
    return (
        len(given) == len(columns)
        and given <= table.columns.keys()
        and all(name in given for name in table.key)
        and not derive
    )


def _batch(
    table: Table,
    given: frozenset[str],
    values_of: Callable[[str], list[Any]],
    count: int,
    keep_last: bool,
) -> Batch:
    """A batch of ``count`` rows giving the columns ``given``; ``values_of(column)`` its values."""
    if unknown := given - table.columns.keys():
        raise WarehouseError(f"{table.name}: unknown column(s) {', '.join(sorted(unknown))}")
    for name in table.key:
        if name not in given:
            raise WarehouseError(f"{table.name}: every row needs its key column {name!r}")
    derive = "date_key" in table.columns and next((c for c in TIME_COLUMNS if c in given), None)
    columns = tuple(c for c in table.columns if c in given or (derive and c == "date_key"))
    data = [_convert(table, c, values_of(c) if c in given else [None] * count) for c in columns]
    if derive and None in (keys := data[columns.index("date_key")]):
        times = data[columns.index(derive)]
        for i, (key, ts) in enumerate(zip(keys, times, strict=True)):
            if key is None and ts is not None:
                keys[i] = date_key(ts)
    for name in table.key:
        if None in data[columns.index(name)]:
            raise WarehouseError(f"{table.name}: every row needs its key column {name!r}")
    data = _dedup(data, [columns.index(name) for name in table.key], keep_last)
    return Batch(table, columns, data)


def _dedup(data: list[list[Any]], key_at: list[int], keep_last: bool) -> list[list[Any]]:
    keys: list[Any] = (
        data[key_at[0]] if len(key_at) == 1 else list(zip(*(data[i] for i in key_at), strict=True))
    )
    if len(set(keys)) == len(keys):
        return data
    where: dict[Any, int] = {}
    for i, key in enumerate(keys):
        if keep_last or key not in where:
            where[key] = i
    kept = sorted(where.values())
    return [[column[i] for i in kept] for column in data]


#: Python types each kind takes as is (others are refused with the column's name).
_TYPES: Final[dict[Kind, tuple[type, ...]]] = {
    "text": (str,),
    "int": (int,),
    "bigint": (int,),
    "double": (float, int),
    "bool": (bool,),
}


def _convert(table: Table, column: str, values: list[Any]) -> list[Any]:
    kind = table.columns[column]
    types = {*map(type, values)}
    if (allowed := _TYPES.get(kind)) and not types <= {*allowed, type(None)}:
        bad = next(v for v in values if v is not None and type(v) not in allowed)
        raise WarehouseError(f"{table.name}.{column}: expected {kind}, got {bad!r}")
    try:
        if kind == "json":
            if types <= _TEXT:
                return values
            return [v if v is None or isinstance(v, str) else _dumps(v) for v in values]
        if kind == "timestamptz":
            return [v if type(v) is datetime and v.tzinfo else _timestamp(v) for v in values]
        if kind == "date":
            return [v if type(v) is date else _date(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise WarehouseError(f"{table.name}.{column}: {exc}") from None
    return values


_TEXT: Final = frozenset({str, type(None)})


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or an ISO string, got {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if value is None or isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value)
    raise TypeError(f"expected a date or an ISO string, got {value!r}")


#: Upserts that replace a row only with one at least as large in this column: a visit's record
#: published again (a replay, an open visit flushed before it closed, two members racing) never
#: takes a row back to fewer events.
GROWING: Final[Mapping[str, str]] = MappingProxyType({"fact_session": "events"})


def insert_sql(batch: Batch, source: str) -> str:
    """``INSERT INTO table SELECT ... FROM source``: fails on a key the table holds."""
    cols = ", ".join(f'"{c}"' for c in batch.columns)
    return f'INSERT INTO "{batch.table.name}" ({cols}) SELECT {cols} FROM {source}'


def load_sql(batch: Batch, source: str, *, update: bool) -> str:
    """``INSERT INTO table SELECT ... FROM source ON CONFLICT (key) DO NOTHING / DO UPDATE``
    (for a :data:`GROWING` table, ``DO UPDATE ... WHERE`` the new row is as large)."""
    table = batch.table
    others = [c for c in batch.columns if c not in table.key]
    action = "DO NOTHING"
    if update and others:
        action = "DO UPDATE SET " + ", ".join(f'"{c}" = excluded."{c}"' for c in others)
        if (size := GROWING.get(table.name)) in batch.columns:
            action += f' WHERE excluded."{size}" >= "{table.name}"."{size}"'
    key = ", ".join(f'"{c}"' for c in table.key)
    return f"{insert_sql(batch, source)} ON CONFLICT ({key}) {action}"
