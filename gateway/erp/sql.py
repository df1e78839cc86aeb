"""The SQL connector: the ERP's own database (PostgreSQL, or MariaDB/MySQL), read-only.

``[erp.sql]`` holds one mapping query per entity; its columns are named like the row's fields
(``sku``, ``name``, ``price``... see ``gateway.erp.base``) plus ``cursor``, and ``:cursor`` in
it is bound to the last cursor kept (``initial_cursor`` on a full sync or the first run)::

    SELECT p.code AS sku, p.name, p.list_price AS price, 'EUR' AS currency,
           p.write_date AS cursor
    FROM product p WHERE p.write_date > :cursor

``:cursor`` becomes ``$1`` (asyncpg) or ``%s`` (asyncmy) outside string literals, quoted names
and comments; PostgreSQL's ``::casts`` are left alone. With asyncpg the stored cursor (text) is
converted to the type the server infers for the parameter (a ``timestamp`` cursor is bound as
a datetime); MySQL is sent text (or an integer) and converts it itself. ``cursor`` is a
reserved word in MySQL and MariaDB: there the column is named ``AS `cursor```.

Each read is one query on a connection of its own (closed when the read ends), streamed in
pages of ``page_size``: a server-side cursor in a read-only REPEATABLE READ transaction on
PostgreSQL (every page from one snapshot), an unbuffered result on MariaDB. The next page is
fetched while the current one is being loaded.

**Page cursors.** Every page but the last carries the cursor the read started from; the last
carries the largest ``cursor`` value read (rendered as text: ``2026-01-01 10:00:00+00:00``).
So the query needs no ``ORDER BY`` (a view or a join over the ERP's tables is often not cheap
to sort), rows sharing a cursor value can straddle pages without one being skipped, and a
read interrupted half-way is read again from its start (the loads are idempotent upserts). A
query whose rows have no change date says ``NULL AS cursor``: it is read whole every time.

**Sales** are read ordered by ``order_id`` (the query is wrapped in ``SELECT * FROM (...)
ORDER BY order_id``) and a page never ends in the middle of an order (the sync publishes
each order whole).

A database that cannot be reached, or does not answer within ``timeout`` (the connection, the
query, any page), raises :class:`~gateway.erp.base.ErpUnavailable`: the sync backs off and
retries. A query the database refuses (a syntax error, an unknown table) or that lacks a
required column raises a :class:`~gateway.errors.ConfigError` naming ``erp.sql.<entity>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, cast
from urllib.parse import unquote, urlsplit

import asyncmy
import asyncpg
import msgspec
from asyncmy.cursors import SSDictCursor
from asyncmy.errors import MySQLError, ProgrammingError

from gateway.config import Config, ErpSqlConfig
from gateway.erp.base import ROW_TYPES, Entity, ErpUnavailable, Page, check_rows
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

Dialect = Literal["postgres", "mysql"]
SCHEMES: Final[Mapping[str, Dialect]] = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
#: Most seconds a connection may take (``timeout`` is meant for long queries).
CONNECT_TIMEOUT: Final = 10.0
#: MySQL error numbers that say the server is busy, going away or cut the query short (the
#: client's own errors, >= 2000, are all about the connection).
MYSQL_TRANSIENT: Final = frozenset(
    {1040, 1053, 1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1205, 1213, 1317,
     1927, 1969, 3024}
)  # fmt: skip
#: PostgreSQL SQLSTATE classes that are the query's fault (syntax, names, rights, data, a
#: write in the read-only transaction), not the server's state.
POSTGRES_QUERY_CLASSES: Final = ("42", "22", "0A", "3F", "25", "21", "2B")

#: Sale lines come ordered by order, so that the lines of one are loaded in one page.
SALES_ORDER: Final = "SELECT * FROM (\n{query}\n) erp_sales ORDER BY order_id"

Fetch = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]


# --- no I/O: placeholders, cursor values -----------------------------------------------------


def bind_cursor(query: str, dialect: Dialect) -> tuple[str, int]:
    """``query`` with each ``:cursor`` outside literals, quoted names and comments replaced by
    the driver's placeholder, and how many there were. For MySQL with a placeholder, every
    ``%`` is doubled (the driver formats the whole text with ``%``)."""
    mysql = dialect == "mysql"
    out: list[str] = []
    count, i, n = 0, 0, len(query)
    while i < n:
        c = query[i]
        end = _skip_quoted(query, i, mysql)
        if end > i:
            out.append(query[i:end])
            i = end
        elif (
            c == ":"
            and query.startswith(":cursor", i)
            and (i == 0 or query[i - 1] != ":")
            and not _ident_char(query[i + 7 : i + 8])
        ):
            out.append("%s" if mysql else "$1")
            count += 1
            i += 7
        else:
            out.append(c)
            i += 1
    if mysql and count:
        # Doubled after the fact, placeholders excepted: the text is formatted as a whole.
        return "".join(p if p == "%s" else p.replace("%", "%%") for p in out), count
    return "".join(out), count


def _ident_char(c: str) -> bool:
    return bool(c) and (c.isalnum() or c in "_$")


def _skip_quoted(query: str, i: int, mysql: bool) -> int:
    """The end of the literal, quoted name or comment starting at ``i`` (``i`` when none)."""
    c = query[i]
    if c == "'" or (c == '"' and mysql):
        escaped = mysql or (
            i > 0 and query[i - 1] in "eE" and not _ident_char(query[i - 2 : i - 1])
        )
        return _closing(query, i + 1, c, escaped)
    if c == '"' or (c == "`" and mysql):
        return _closing(query, i + 1, c, escaped=False)
    if query.startswith("--", i) or (c == "#" and mysql):
        end = query.find("\n", i)
        return len(query) if end < 0 else end + 1
    if query.startswith("/*", i):
        end = query.find("*/", i + 2)
        return len(query) if end < 0 else end + 2
    if c == "$" and not mysql and not _ident_char(query[i - 1 : i] if i else ""):
        close = query.find("$", i + 1)
        tag = query[i : close + 1] if close > 0 else ""
        if tag and (tag == "$$" or (tag[1:-1].isidentifier() and tag[1:-1].isascii())):
            end = query.find(tag, close + 1)
            return len(query) if end < 0 else end + len(tag)
    return i


def _closing(query: str, i: int, quote: str, escaped: bool) -> int:
    """Past the ``quote`` closing a literal whose text starts at ``i`` (doubled quotes, and
    backslashes when ``escaped``, do not close it)."""
    n = len(query)
    while i < n:
        c = query[i]
        if escaped and c == "\\":
            i += 2
        elif c == quote:
            if query[i + 1 : i + 2] != quote:
                return i + 1
            i += 2
        else:
            i += 1
    return n


def cursor_text(value: Any) -> str:
    """A cursor value as it is kept: ``2026-01-01 10:00:00.5+00:00``, ``42``, ``0.5``."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def postgres_cursor(text: str, type_name: str) -> Any:
    """The Python value asyncpg binds for a parameter of ``type_name`` (ValueError if none)."""
    if type_name in ("timestamp", "timestamptz"):
        value = datetime.fromisoformat(text)
        if type_name == "timestamptz" and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # the sessions run in UTC
        if type_name == "timestamp" and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value
    if type_name == "date":
        return date.fromisoformat(text[:10])
    if type_name in ("int2", "int4", "int8", "oid", "xid", "xid8"):
        return int(text)
    if type_name == "numeric":
        try:
            return Decimal(text)
        except InvalidOperation:
            raise ValueError(f"not a number: {text!r}") from None
    if type_name in ("float4", "float8"):
        return float(text)
    return text


def mysql_cursor(text: str) -> int | str:
    """MySQL converts a text cursor to the column's type; whole numbers go as numbers (a
    BIGINT compared with text is compared as a double)."""
    stripped = text.strip()
    digits = stripped.removeprefix("-")
    return int(stripped) if digits.isascii() and digits.isdigit() else text


def highest(rows: Sequence[Mapping[str, Any]], top: Any) -> Any:
    """The largest non-null ``cursor`` of ``rows`` and ``top``."""
    values = [v for row in rows if (v := row["cursor"]) is not None]
    if top is not None:
        values.append(top)
    return max(values) if values else None


def split_last_order(
    lines: Sequence[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Sale lines (in ``order_id`` order) without those of the last order, and those: its
    lines may go on in the next page, and an order is loaded whole."""
    end = len(lines)
    while end > 0 and lines[end - 1]["order_id"] == lines[-1]["order_id"]:
        end -= 1
    return list(lines[:end]), list(lines[end:])


def required_columns(entity: Entity) -> list[str]:
    fields = msgspec.structs.fields(ROW_TYPES[entity])
    return [f.name for f in fields if f.required] + ["cursor"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the connector ---------------------------------------------------------------------------


@dataclass
class Batch:
    """One page read: its typed rows, the largest cursor so far, whether it is the last."""

    rows: list[Any] = field(default_factory=list)
    skipped: int = 0
    #: Sales: the lines of the page's last order, which may go on in the next page.
    held: list[Mapping[str, Any]] = field(default_factory=list)
    top: Any = None
    last: bool = False


@dataclass(frozen=True)
class Target:
    """Where the ERP database is, for connecting and for messages (never the password)."""

    dialect: Dialect
    dsn: str
    where: str

    @classmethod
    def parse(cls, dsn: str, source: str) -> Target:
        try:
            url = urlsplit(dsn)
            dialect = SCHEMES.get(url.scheme.lower())
            host, port = url.hostname or "localhost", url.port
        except ValueError as exc:
            raise ConfigError(source, "erp.sql.dsn", f"not a database URL: {exc}") from None
        if dialect is None:
            raise ConfigError(
                source, "erp.sql.dsn", "expected postgresql://... or mysql://... (mariadb://)"
            )
        port = port or (5432 if dialect == "postgres" else 3306)
        return cls(dialect, dsn, f"erp database {url.scheme}://{host}:{port}{url.path}")


class SqlConnector:
    """:class:`gateway.erp.base.Connector` over the ERP's own database."""

    def __init__(self, settings: ErpSqlConfig, source: str = "<config>") -> None:
        self.settings = settings
        self.source = source
        self.target = Target.parse(settings.dsn.get(), source)
        self.queries: dict[Entity, tuple[str, int]] = {}
        for entity in ROW_TYPES:
            query = getattr(settings, entity).strip().rstrip(";")
            if query and entity == "sales":
                query = SALES_ORDER.format(query=query)
            if query:
                self.queries[entity] = bind_cursor(query, self.target.dialect)
        self._open: set[Any] = set()  # connections of reads under way

    @classmethod
    def from_config(cls, config: Config) -> SqlConnector:
        return cls(config.erp.sql, config.source)

    async def read(self, entity: Entity, cursor: str | None) -> AsyncGenerator[Page[Any], None]:
        """The rows of ``entity`` from ``cursor`` on, ``page_size`` at a time; one empty page
        when the entity has no query or nothing changed."""
        if entity not in self.queries:
            yield Page([], cursor)
            return
        query, placeholders = self.queries[entity]
        start = cursor if cursor is not None else self.settings.initial_cursor
        opened = self._postgres if self.target.dialect == "postgres" else self._mysql
        async with opened(entity, query, placeholders, start) as fetch:
            ahead = asyncio.ensure_future(self._next(entity, fetch, Batch()))
            try:
                while True:
                    batch = await ahead
                    if not batch.last:
                        # The next page is fetched and checked while this one is loaded.
                        ahead = asyncio.ensure_future(self._next(entity, fetch, batch))
                    if batch.rows or batch.skipped or batch.last:
                        done = cursor if batch.top is None else cursor_text(batch.top)
                        yield Page(batch.rows, done if batch.last else cursor, batch.skipped)
                    if batch.last:
                        return
            finally:  # a read given up half-way (or failed): the page ahead is not wanted
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)

    async def _next(self, entity: Entity, fetch: Fetch, before: Batch) -> Batch:
        """The next page: fetched, its rows checked (in a thread, while the loop waits on the
        warehouse), the lines of an order that may go on held back."""
        found = await fetch()
        last = len(found) < self.settings.page_size
        raw = [*before.held, *found] if before.held else found
        held: list[Mapping[str, Any]] = []
        if entity == "sales" and not last:
            raw, held = split_last_order(raw)
        rows, skipped = await asyncio.to_thread(check_rows, entity, raw, f" (erp.sql.{entity})")
        return Batch(rows, skipped, held, highest(found, before.top), last)

    async def confirm(self, entity: Entity, page: Page[Any]) -> None:
        """Nothing to do: the sync keeps the page's cursor."""

    async def close(self) -> None:
        """Drop the connections of reads left suspended."""
        for connection in list(self._open):
            if isinstance(connection, asyncpg.Connection):
                connection.terminate()
            else:
                connection.close()
        self._open.clear()

    # --- PostgreSQL ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _postgres(
        self, entity: Entity, query: str, placeholders: int, start: str
    ) -> AsyncIterator[Fetch]:
        timeout = self.settings.timeout
        try:
            connection = await asyncpg.connect(
                self.target.dsn,
                timeout=min(timeout, CONNECT_TIMEOUT),
                statement_cache_size=0,
                server_settings={"timezone": "UTC", "application_name": "touchpoint-erp"},
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ErpUnavailable(
                f"{self.target.where}: cannot connect: {_first_line(exc)}"
            ) from exc
        except ValueError as exc:  # a DSN asyncpg cannot read
            raise ConfigError(self.source, "erp.sql.dsn", _first_line(exc)) from exc
        self._open.add(connection)
        try:
            with self._translated(entity, postgres=True):
                transaction = connection.transaction(isolation="repeatable_read", readonly=True)
                await transaction.start()
                statement = await connection.prepare(query, timeout=timeout)
                self._check_columns(entity, [a.name for a in statement.get_attributes()])
                args = [
                    self._postgres_arg(entity, start, p.name) for p in statement.get_parameters()
                ]
                rows = await statement.cursor(*args, timeout=timeout)

            async def fetch() -> Sequence[Mapping[str, Any]]:
                with self._translated(entity, postgres=True):
                    found = await rows.fetch(self.settings.page_size, timeout=timeout)
                # Records are read-only mappings (keys, items, ``record[name]``).
                return cast(Sequence[Mapping[str, Any]], found)

            yield fetch
        finally:
            self._open.discard(connection)
            # The transaction only read: closing the connection ends it.
            with contextlib.suppress(Exception):
                await connection.close(timeout=CONNECT_TIMEOUT)
            if not connection.is_closed():
                connection.terminate()

    def _postgres_arg(self, entity: Entity, start: str, type_name: str) -> Any:
        try:
            return postgres_cursor(start, type_name)
        except ValueError as exc:
            initial = start == self.settings.initial_cursor
            key = "erp.sql.initial_cursor" if initial else f"erp.sql.{entity}"
            raise ConfigError(
                self.source, key, f"cursor {start!r} is not a {type_name} ({exc})"
            ) from exc

    # --- MariaDB / MySQL -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _mysql(
        self, entity: Entity, query: str, placeholders: int, start: str
    ) -> AsyncIterator[Fetch]:
        timeout = self.settings.timeout
        url = urlsplit(self.target.dsn)
        # A streamed result waits for the sync to load each page: let the server wait too.
        waits = max(60, int(timeout))
        try:
            async with asyncio.timeout(min(timeout, CONNECT_TIMEOUT) + 1):
                connection = await asyncmy.connect(
                    host=url.hostname or "localhost",
                    port=url.port or 3306,
                    user=unquote(url.username or ""),
                    password=unquote(url.password or ""),
                    database=unquote(url.path.lstrip("/")) or None,
                    connect_timeout=min(timeout, CONNECT_TIMEOUT),
                    autocommit=True,
                    init_command=f"SET time_zone = '+00:00', net_write_timeout = {waits}",
                )
        except (OSError, TimeoutError, MySQLError) as exc:
            raise ErpUnavailable(
                f"{self.target.where}: cannot connect: {_first_line(exc)}"
            ) from exc
        self._open.add(connection)
        try:
            with self._translated(entity, postgres=False):
                rows = connection.cursor(SSDictCursor)
                args = [mysql_cursor(start)] * placeholders if placeholders else None
                async with asyncio.timeout(timeout):
                    await rows.execute(query, args)
                self._check_columns(entity, [d[0] for d in rows.description or ()])

            async def fetch() -> Sequence[Mapping[str, Any]]:
                with self._translated(entity, postgres=False):
                    async with asyncio.timeout(timeout):
                        return await rows.fetchmany(self.settings.page_size)

            yield fetch
        finally:
            self._open.discard(connection)
            # Not ensure_closed(): the rest of an unbuffered result would be read first.
            connection.close()

    # --- both ------------------------------------------------------------------------------

    def _check_columns(self, entity: Entity, columns: list[str]) -> None:
        missing = [c for c in required_columns(entity) if c not in columns]
        if missing:
            raise ConfigError(
                self.source,
                f"erp.sql.{entity}",
                f"the query returns no {', '.join(missing)} column "
                f"(it returns {', '.join(columns) or 'nothing'})",
            )

    @contextlib.contextmanager
    def _translated(self, entity: Entity, *, postgres: bool) -> Iterator[None]:
        """Driver errors as ErpUnavailable (the database) or ConfigError (the query)."""
        try:
            yield
        except (ConfigError, ErpUnavailable):
            raise
        except TimeoutError as exc:
            raise ErpUnavailable(
                f"{self.target.where}: erp.sql.{entity}: no answer in {self.settings.timeout:g} s"
            ) from exc
        except (asyncpg.PostgresError, MySQLError) as exc:
            if _query_fault(exc, postgres):
                raise ConfigError(
                    self.source,
                    f"erp.sql.{entity}",
                    f"the query failed on {self.target.where}: {_first_line(exc)}",
                ) from exc
            raise ErpUnavailable(f"{self.target.where}: {_first_line(exc)}") from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise ErpUnavailable(f"{self.target.where}: {_first_line(exc)}") from exc


def _query_fault(exc: Exception, postgres: bool) -> bool:
    """Whether the database refused the query itself (retrying will not help)."""
    if postgres:
        state = str(getattr(exc, "sqlstate", "") or "")
        return state.startswith(POSTGRES_QUERY_CLASSES)
    args = getattr(exc, "args", ())
    number = args[0] if args and isinstance(args[0], int) else 0
    if isinstance(exc, ProgrammingError) and not number:
        return True  # raised by the driver itself (arguments that do not fit)
    return 1000 <= number < 2000 and number not in MYSQL_TRANSIENT
