"""The embedded engine: one DuckDB file, written by one thread, read by a small pool.

DuckDB calls block, so none runs on the event loop. Writes (loads, migrations, erasures) go
through a single writer thread in order, which is also all DuckDB allows a file at once; reads
run in ``readers`` threads, each on its own cursor of the same database (DuckDB releases the GIL
while a query runs, and MVCC shows readers what the writer committed). Loads go in as one Arrow
table per batch (``INSERT INTO t SELECT ... FROM batch ON CONFLICT ...``): ~1,000,000 rows/s
where ``executemany`` manages ~1,400. A write the file cannot take (a full disk, a file size
limit, an I/O error) rolls the batch back whole and raises :class:`WarehouseUnavailable`, so
agents wait and retry it, as for a PostgreSQL server away, instead of dead-lettering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]

from gateway.errors import WarehouseError, WarehouseUnavailable
from gateway.warehouse import migrations
from gateway.warehouse.base import (
    COLUMNS_SQL,
    KEYS_SQL,
    Batch,
    Kind,
    Records,
    Refused,
    Table,
    insert_sql,
    load_sql,
    prepare,
    record_batches,
    table_named,
    tables_from,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_ARROW: Final[dict[Kind, Any]] = {
    "text": pa.string(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "json": pa.string(),
    "other": None,
}
_BATCH: Final = "_touchpoint_batch"
#: The write-ahead log's size at which a COMMIT also checkpoints it into the file. DuckDB's
#: 16 MB made the collector's every batch (~80,000 events, ~25 MB of log) checkpoint inside its
#: COMMIT, on the path to its acknowledgement (bench/collector.py: COMMIT ~2.6 µs an event
#: with 16 MB, ~1.5 with 64 MB). A crash replays at most this much log on the next open.
_CHECKPOINT_AT: Final = "64MB"
#: Rows converted to Arrow at a time (a few ms each).
_SLICE: Final = 2048
#: How DuckDB says a write to its file failed; a COMMIT wraps it in a TransactionException.
_WRITE_FAILED: Final = "Could not write file"


class DuckDBWarehouse:
    """The warehouse in a DuckDB file; open it with :meth:`open`."""

    engine = "duckdb"

    def __init__(self, path: str, readers: int, threads: int = 0) -> None:
        self.path = path
        self.threads = threads or _cores() + 1
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="warehouse-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="warehouse-reader")
        self._cursors: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._size = readers
        self._db: duckdb.DuckDBPyConnection | None = None
        self._tables: dict[str, Table] | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, readers: int = 4, threads: int = 0) -> DuckDBWarehouse:
        """Open (creating it if needed) the file; ``threads`` 0: one more than the cores."""
        warehouse = cls(str(path), readers, threads)
        try:
            await warehouse._write(warehouse._connect)
        except BaseException:
            await warehouse.close()
            raise
        return warehouse

    # --- the interface ---------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        applied = await self._write(self._migrate)
        self._tables = None
        return applied

    async def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        return await self._load(table, rows, update=False) if rows else 0

    async def upsert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        return await self._load(table, rows, update=True) if rows else 0

    async def insert_records(self, loads: Sequence[Records]) -> list[int]:
        def load() -> list[int]:
            tables = [self._table(r.table) if r.rows else None for r in loads]
            try:
                return self._apply(record_batches(tables, loads, checked=False), update=False)
            except Refused:  # before any statement ran: _apply makes every Arrow table first
                return self._apply(record_batches(tables, loads, checked=True), update=False)

        return await self._write(load) if any(r.rows for r in loads) else [0] * len(loads)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return await self._read(lambda cursor: _fetch(cursor, sql, params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self._write(lambda: self._con.execute(sql, list(params)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._readers.shutdown)  # lets running reads finish
        await loop.run_in_executor(self._writer, self._disconnect)
        await loop.run_in_executor(None, self._writer.shutdown)

    # --- threads ---------------------------------------------------------------------------

    async def _write(self, job: Callable[[], T]) -> T:
        return await self._run(self._writer, job)

    async def _read(self, job: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        def with_cursor() -> T:
            cursor = self._cursors.get()
            try:
                return job(cursor)
            finally:
                self._cursors.put(cursor)

        return await self._run(self._readers, with_cursor)

    async def _run(self, executor: ThreadPoolExecutor, job: Callable[[], T]) -> T:
        if self._closed:
            raise WarehouseError(f"warehouse {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, job)
        except duckdb.Error as exc:
            raise _translate(self.path, exc) from exc

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            raise WarehouseError(f"warehouse {self.path} is closed")
        return self._db

    # --- in the writer thread --------------------------------------------------------------

    def _connect(self) -> None:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # data.dir under a file, no permission...
                raise WarehouseError(
                    f"duckdb {self.path}: cannot make its directory: {exc}"
                ) from exc
        # Never an extension downloaded at run time (a file that is an SQLite database made
        # DuckDB fetch sqlite_scanner to open it).
        db = duckdb.connect(self.path, config={"autoinstall_known_extensions": False})
        db.execute("SET TimeZone = 'UTC'")  # per connection: hour, week, date_key in UTC
        db.execute(f"SET threads = {int(self.threads)}")  # for the whole database
        db.execute(f"SET checkpoint_threshold = '{_CHECKPOINT_AT}'")
        for _ in range(self._size):
            cursor = db.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
            self._cursors.put(cursor)
        self._db = db

    def _disconnect(self) -> None:
        while not self._cursors.empty():
            self._cursors.get().close()
        if self._db is not None:
            self._db.close()  # checkpoints the write-ahead log into the file
            self._db = None

    def _migrate(self) -> list[int]:
        con = self._con
        con.execute(migrations.SCHEMA_MIGRATIONS)
        done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
        applied = []
        for migration in migrations.pending(done):
            with _transaction(con):
                for statement in migration.statements:
                    con.execute(statement)
                con.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, now())",
                    [migration.version, migration.name],
                )
            log.info("warehouse %s: migration %d: %s", self.path, migration.version, migration.name)
            applied.append(migration.version)
        return applied

    def _table(self, name: str) -> Table:
        if self._tables is None:
            self._tables = tables_from(_fetch(self._con, COLUMNS_SQL), _fetch(self._con, KEYS_SQL))
        return table_named(self._tables, name)

    async def _load(self, name: str, rows: Sequence[Mapping[str, Any]], *, update: bool) -> int:
        def load() -> int:
            batches = prepare(self._table(name), rows, keep_last=update)
            return self._apply([batches], update=update)[0]

        return await self._write(load)

    def _apply(self, loads: list[list[Batch]], *, update: bool) -> list[int]:
        """Load each group of batches in one transaction (all or none); rows added per group.

        Rows that only add go in as a plain ``INSERT`` first: the usual batch holds no key the
        table has, and DuckDB checks a new key for less than ``ON CONFLICT`` costs
        (bench/collector.py: the writer's and DuckDB's CPU 1.9-2.5 → 1.6-2.0 s a run). A batch
        that does (a replay) fails whole, and goes again keeping the rows already there."""
        tables = [[_arrow(batch) for batch in batches] for batches in loads]
        if not update:
            try:
                return self._statements(loads, tables, lambda batch: insert_sql(batch, _BATCH))
            except duckdb.ConstraintException:
                pass  # rolled back
        return self._statements(loads, tables, lambda batch: load_sql(batch, _BATCH, update=update))

    def _statements(
        self, loads: list[list[Batch]], tables: list[list[Any]], sql: Callable[[Batch], str]
    ) -> list[int]:
        con, added = self._con, [0] * len(loads)
        with _transaction(con):
            for n, (batches, arrows) in enumerate(zip(loads, tables, strict=True)):
                for batch, arrow in zip(batches, arrows, strict=True):
                    con.register(_BATCH, arrow)
                    try:
                        result = con.execute(sql(batch)).fetchone()
                    finally:
                        # a failed statement aborted the transaction, and the ROLLBACK drops
                        # the view: its error is the one to raise
                        with contextlib.suppress(duckdb.TransactionException):
                            con.unregister(_BATCH)
                    added[n] += int(result[0]) if result else 0
        return added


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """All of the block's statements or none. A COMMIT that fails to write (a full disk) has
    ended the transaction already: the ROLLBACK then has nothing to undo, and the COMMIT's
    error is the one that goes up."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.TransactionException):
            con.execute("ROLLBACK")
        raise


def _cores() -> int:
    """Cores this process may run on (the container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _arrow(batch: Batch) -> Any:
    """The batch as an Arrow table typed like its columns (a bad value names its column).

    Unchecked rows become struct arrays, converted in C without a Python pass per column
    (bench/collector.py), :data:`_SLICE` rows at a time: the conversion keeps the GIL while it
    runs, and the event loop's thread gets it back between slices; a value that does not fit
    raises :class:`Refused`."""
    if batch.rows is not None:
        types = [_ARROW[batch.table.columns[c]] for c in batch.columns]
        if None in types:  # a column of a kind Arrow is not told: let the checked path infer
            raise Refused(f"{batch.table.name}: a column of another type")
        struct = pa.struct(list(zip(batch.columns, types, strict=True)))
        rows = batch.rows
        try:
            return pa.Table.from_batches(
                [
                    pa.RecordBatch.from_struct_array(pa.array(rows[i : i + _SLICE], type=struct))
                    for i in range(0, len(rows), _SLICE)
                ],
                schema=pa.schema(struct),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
            raise Refused(f"{batch.table.name}: {exc}") from None
    arrays = []
    for column, values in zip(batch.columns, batch.data, strict=True):
        try:
            arrays.append(pa.array(values, type=_ARROW[batch.table.columns[column]]))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise WarehouseError(f"{batch.table.name}.{column}: {exc}") from None
    return pa.Table.from_arrays(arrays, names=list(batch.columns))


def _fetch(
    cursor: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    cursor.execute(sql, list(params))
    description = cursor.description or []
    names = [d[0] for d in description]
    rows = cursor.fetchall()
    decode = [i for i, d in enumerate(description) if str(d[1]) == "JSON"]
    if decode:
        rows = [tuple(_loads(v) if i in decode else v for i, v in enumerate(r)) for r in rows]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _translate(path: str, exc: duckdb.Error) -> WarehouseError:
    message = str(exc).splitlines()[0]
    if isinstance(exc, duckdb.IOException) and "lock" in message.lower():
        return WarehouseError(
            f"{path} is in use by another process ({message}); DuckDB lets one process open it: "
            'query the running gateway (GET /v1/olap), or use warehouse.engine = "postgres"'
        )
    if isinstance(exc, duckdb.IOException) or _WRITE_FAILED in message:
        # a full disk, a file size limit, an I/O error: nothing is wrong with what was asked,
        # and DuckDB goes on once the file can be written again (as PostgreSQL's class 53)
        return WarehouseUnavailable(f"duckdb {path}: {message}")
    if isinstance(exc, duckdb.CatalogException):
        message += " (run `touchpoint warehouse migrate`?)"
    return WarehouseError(f"duckdb {path}: {message}")
