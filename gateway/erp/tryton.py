"""The Tryton connector (trytond 8.x): warehouses, products, stock, parties and sales, polled.

Two transports, one call (``search_read``): the REST API with a user application key when
``erp.tryton.api_key`` is set (stateless, preferred), else JSON-RPC on ``/<db>/rpc/`` with a
session (``common.db.login``; a session that expired is opened again once; a refused login
is not tried again for :data:`LOGIN_RETRY` seconds, since Tryton throttles failed logins).
Every call carries the company in its context (prices read as null without it).

Tryton has no change feed, so reads poll on ``write_date``/``create_date`` (the start of the
writing transaction, UTC). A cursor is the latest of those seen, as ISO text; a read takes
what changed since the cursor less ``erp.tryton.overlap`` (a transaction that started before
it but committed after) and drops the records that confirmed pages already held (same id,
same date). What does not move a record's own dates is polled beside it: a template's price
(products), a contact mechanism (customers), and done ``stock.move`` records (stock: their
products' quantities are read again). Quantities are read one warehouse per request: Tryton
sums the locations of one request. Pages follow ids, so only a read's last page carries the
new cursor.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import aiohttp

from gateway.config import Config, ErpTrytonConfig
from gateway.erp.base import Entity, ErpUnavailable, Page, check_rows

log = logging.getLogger(__name__)

#: Seconds before a login Tryton refused is tried again (each failure makes Tryton answer
#: slower, and after five it refuses even the right password for a while).
LOGIN_RETRY: Final = 60.0
#: The sale states read, and the state their lines get.
SALE_STATES: Final = {"confirmed": "done", "processing": "done", "done": "done",
                      "cancelled": "cancelled"}  # fmt: skip
STAMPS: Final = ("write_date", "create_date")
PRODUCT_FIELDS: Final = ("code", "name", "list_price_used", "cost_price", "categories.name",
                         "categories.write_date", "active", "template.active",
                         "template.write_date", *STAMPS)  # fmt: skip
PARTY_FIELDS: Final = ("code", "name", "email", "phone", "contact_mechanisms.write_date",
                       "contact_mechanisms.create_date", *STAMPS)  # fmt: skip
SALE_FIELDS: Final = ("number", "state", "sale_date", "party.code", "warehouse.code",
                      "currency.code", *STAMPS)  # fmt: skip
_DATETIME: Final = ("year", "month", "day", "hour", "minute", "second", "microsecond")

Record = dict[str, Any]
#: A record as a confirmed page held it: its id and its latest date (ISO).
Key = tuple[int, str]
#: What a reader yields: raw rows, the keys a page holds, the dates it saw.
Batch = tuple[list[dict[str, Any]], list[Key], list[datetime]]


# -- values, domains, rows (no I/O) --------------------------------------------------------------


def decode(value: dict[str, Any]) -> Any:
    """``json.loads`` object hook for Tryton's typed values (Decimal, date, datetime in UTC)."""
    kind = value.get("__class__")
    if kind == "Decimal":
        return Decimal(value["decimal"])
    if kind == "datetime":
        return datetime(*(value[f] for f in _DATETIME)).replace(tzinfo=UTC)
    if kind == "date":
        return date(value["year"], value["month"], value["day"])
    return value


def typed(moment: datetime) -> dict[str, Any]:
    """A datetime as Tryton takes it in a domain (naive UTC)."""
    moment = moment.astimezone(UTC)
    return {"__class__": "datetime", **{f: getattr(moment, f) for f in _DATETIME}}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_cursor(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    moment = datetime.fromisoformat(cursor)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def since(moment: datetime, fields: Iterable[str]) -> list[Any]:
    """The records any of whose ``fields`` (dates, maybe dotted) is at or after ``moment``."""
    return ["OR", *([f, ">=", typed(moment)] for f in fields)]


def undot(record: Any) -> Any:
    """JSON-RPC nests a dotted field under ``"party."``, REST under ``"party"``: the latter."""
    if isinstance(record, list):
        return [undot(r) for r in record]
    if isinstance(record, dict):
        return {k.removesuffix("."): undot(v) for k, v in record.items()}
    return record


def dates(value: Any) -> list[datetime]:
    """Every datetime in a record, nested ones included (a template's, a contact's)."""
    if isinstance(value, datetime):
        return [value]
    if isinstance(value, dict):
        return [d for v in value.values() for d in dates(v)]
    if isinstance(value, list):
        return [d for v in value for d in dates(v)]
    return []


def key(record: Record) -> Key:
    latest = max(dates(record), default=None)
    return record["id"], iso(latest) if latest else ""


def code_of(value: Any) -> Any:
    return value.get("code") if isinstance(value, dict) else None


def number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def product_values(record: Record, currency: Any) -> dict[str, Any]:
    categories = record.get("categories") or [{}]
    return {"sku": record.get("code"), "name": record.get("name"),
            "price": number(record.get("list_price_used")),
            "cost": number(record.get("cost_price")),
            "category": categories[0].get("name"), "currency": currency,
            "erp_id": str(record["id"]),
            # a variant is active only while its template is too (SQLite says 1 and 0)
            "active": flag(record.get("active"))
                      and flag((record.get("template") or {}).get("active"))}  # fmt: skip


def flag(value: Any) -> bool:
    """A Tryton boolean as read (``True``/``1``); not read at all counts as true."""
    return value is None or bool(value)


def customer_values(record: Record) -> dict[str, Any]:
    return {"party_id": record.get("code"), "name": record.get("name"),
            "email": record.get("email"), "phone": record.get("phone")}  # fmt: skip


def sale_values(sale: Record, line: Record) -> dict[str, Any]:
    """One line of a sale; ``ordered_at`` is the sale date at midnight UTC (else created)."""
    day = sale.get("sale_date")
    ordered = datetime(day.year, day.month, day.day, tzinfo=UTC) if day else sale.get("create_date")
    return {"order_id": sale.get("number"), "sku": code_of(line.get("product")),
            "quantity": line.get("quantity"), "unit_price": number(line.get("unit_price")),
            "currency": code_of(sale.get("currency")), "ordered_at": ordered,
            "party_id": code_of(sale.get("party")), "store_id": code_of(sale.get("warehouse")),
            "state": SALE_STATES.get(sale.get("state", ""))}  # fmt: skip


# -- transports ------------------------------------------------------------------------------------


class Http:
    """What both transports share: one aiohttp session; failures become ErpUnavailable."""

    def __init__(self, settings: ErpTrytonConfig) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, url: str, **kwargs: Any) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            # Always gzip: trytond 8.2 labels a large JSON-RPC answer gzip even when it sent
            # it plain to a client that did not ask for gzip.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                headers={"Accept-Encoding": "gzip"},
            )
        try:
            async with self._session.request(method, url, **kwargs) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ErpUnavailable(f"Tryton at {self.base} unreachable: {reason}") from exc
        if status >= 500:
            raise ErpUnavailable(f"Tryton at {self.base}: HTTP {status} for {url}")
        return status, body

    def answer(self, status: int, body: bytes, what: str) -> Any:
        """The decoded body of a 200 answer."""
        if status != 200:
            text = body[:200].decode(errors="replace")
            raise ErpUnavailable(f"Tryton at {self.base}: HTTP {status} for {what}: {text}")
        try:
            return json.loads(body, object_hook=decode)
        except ValueError as exc:
            raise ErpUnavailable(f"Tryton at {self.base}: {what}: not JSON: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class JsonRpc(Http):
    """JSON-RPC with a session, opened on first use and again when it expired."""

    def __init__(self, settings: ErpTrytonConfig, clock: Callable[[], float]) -> None:
        super().__init__(settings)
        self.url = f"{self.base}/{settings.database}/rpc/"
        self.clock = clock
        self._auth: str | None = None
        self._refused: tuple[float, str] | None = None
        self._lock = asyncio.Lock()
        self._id = 0

    async def search_read(self, model: str, domain: list[Any], fields: Sequence[str],
                          context: Mapping[str, Any], limit: int | None,
                          order: str = "id ASC") -> list[Record]:  # fmt: skip
        params = [domain, 0, limit, [order.split()], list(fields), dict(context)]
        return list(await self.call(f"model.{model}.search_read", params))

    async def call(self, method: str, params: list[Any]) -> Any:
        status, body = await self._post(method, params, await self._login())
        if status == 401:  # the session expired (or was deleted): once more, logged in again
            self._auth = None
            status, body = await self._post(method, params, await self._login())
        answer = self.answer(status, body, method)
        if "error" in answer:
            raise ErpUnavailable(f"Tryton at {self.base}: {method}: {answer['error']}")
        return answer.get("result")

    async def _post(self, method: str, params: list[Any], auth: str | None) -> tuple[int, bytes]:
        self._id += 1
        payload = {"id": self._id, "method": method, "params": params}
        headers = {"Authorization": auth} if auth else {}
        return await self.request("POST", self.url, json=payload, headers=headers)

    async def _login(self) -> str:
        async with self._lock:
            if self._auth:
                return self._auth
            if self._refused and self.clock() - self._refused[0] < LOGIN_RETRY:
                raise ErpUnavailable(self._refused[1])
            user = self.settings.user
            given = [user, {"password": self.settings.password.get()}, "en"]
            status, body = await self._post("common.db.login", given, None)
            if status in (401, 403, 429):
                why = "throttled after failures" if status == 429 else "wrong password?"
                refusal = (
                    f"Tryton at {self.base} refused the login of {user!r} "
                    f"(HTTP {status}, {why}); not tried again for {LOGIN_RETRY:.0f} s"
                )
                self._refused = (self.clock(), refusal)
                raise ErpUnavailable(refusal)
            answer = self.answer(status, body, "common.db.login")
            if not isinstance(answer.get("result"), list):
                raise ErpUnavailable(f"Tryton at {self.base}: login: {answer.get('error')}")
            uid, session = answer["result"][:2]
            self._refused = None
            self._auth = "Session " + base64.b64encode(f"{user}:{uid}:{session}".encode()).decode()
            return self._auth


def b64json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


class Rest(Http):
    """The REST API (trytond >= 8.0) with a user application key: no session to keep."""

    async def search_read(self, model: str, domain: list[Any], fields: Sequence[str],
                          context: Mapping[str, Any], limit: int | None,
                          order: str = "id ASC") -> list[Record]:  # fmt: skip
        query = [("f", f) for f in fields]
        query += [("d", b64json(domain)), ("o", b64json([order.split()]))]
        if limit is not None:
            query.append(("s", str(limit)))
        headers = {"Authorization": f"bearer {self.settings.api_key.get()}",
                   "X-Tryton-Context": b64json(dict(context))}  # fmt: skip
        url = f"{self.base}/{self.settings.database}/rest/model/{model}"
        status, body = await self.request("GET", url, params=query, headers=headers)
        if status == 401:
            raise ErpUnavailable(f"Tryton at {self.base} refused the REST key (HTTP 401)")
        return list(self.answer(status, body, model))


# -- the connector ---------------------------------------------------------------------------------


class TrytonConnector:
    """:class:`gateway.erp.base.Connector` over a Tryton server."""

    def __init__(
        self, settings: ErpTrytonConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.transport = Rest(settings) if settings.api_key.is_set else JsonRpc(settings, clock)
        self.overlap = timedelta(seconds=settings.overlap)
        self._company: Record | None = None
        #: The keys of the records that confirmed pages held, per entity: an overlapping
        #: read drops them (and keeps those of pages read but never confirmed).
        self._seen: dict[Entity, set[Key]] = {}

    @classmethod
    def from_config(cls, config: Config) -> TrytonConnector:
        return cls(config.erp.tryton)

    async def close(self) -> None:
        await self.transport.close()

    async def confirm(self, entity: Entity, page: Page[Any]) -> None:
        self._seen.setdefault(entity, set()).update(page.token or ())

    async def read(self, entity: Entity, cursor: str | None) -> AsyncGenerator[Page[Any], None]:
        start = parse_cursor(cursor)
        after = start - self.overlap if start else None
        seen = self._seen.setdefault(entity, set())
        if after is not None:  # what is older cannot come back
            seen.difference_update({k for k in seen if k[1] < iso(after)})
        readers = {"stores": self._stores, "products": self._products, "stock": self._stock,
                   "customers": self._customers, "sales": self._sales}  # fmt: skip
        latest, held = start, None
        # One page held back: the last one is known, and takes the new cursor, at the end.
        async for raw, keys, moments in readers[entity](after, seen if after else set()):
            latest = max(filter(None, [latest, *moments]), default=None)
            if not raw and held is not None:
                held.token.extend(keys)
                continue
            rows, skipped = check_rows(entity, raw, " (tryton)")
            if held is not None:
                yield held
            held = Page(rows, cursor, skipped, token=keys)
        page = held or Page([], cursor, token=[])
        page.cursor = iso(latest) if latest else cursor
        yield page

    async def _search(self, model: str, domain: list[Any], fields: Sequence[str],
                      **context: Any) -> AsyncIterator[list[Record]]:  # fmt: skip
        """Every record of the domain, ``page_size`` at a time, by id (a record written
        meanwhile neither moves nor hides another, as with offsets)."""
        context = {"company": self.settings.company, **context}
        last, size = 0, self.settings.page_size
        while True:
            paged = [*domain, ["id", ">", last]]
            batch = undot(await self.transport.search_read(model, paged, fields, context, size))
            if batch:
                yield batch
            if len(batch) < size:
                return
            last = batch[-1]["id"]

    async def _all(self, model: str, domain: list[Any], fields: Sequence[str]) -> list[Record]:
        return [r async for batch in self._search(model, domain, fields) for r in batch]

    async def company(self) -> Record:
        """The company's party and currency (read once)."""
        if self._company is None:
            fields = ["party", "currency.code"]
            found = await self._all("company.company", [["id", "=", self.settings.company]], fields)
            if not found:
                raise ErpUnavailable(f"Tryton at {self.transport.base} has no company "
                                     f"{self.settings.company} (erp.tryton.company)")  # fmt: skip
            self._company = found[0]
        return self._company

    async def warehouses(self) -> list[Record]:
        """The warehouses read: those ``erp.tryton.warehouses`` names, else all."""
        domain: list[Any] = [["type", "=", "warehouse"]]
        if self.settings.warehouses:
            domain.append(["code", "in", list(self.settings.warehouses)])
        found = await self._all("stock.location", domain, ["code", "name", *STAMPS])
        if missing := set(self.settings.warehouses) - {w.get("code") for w in found}:
            log.warning("erp tryton: no warehouse with code %s", ", ".join(sorted(missing)))
        return found

    # The readers: given the date to read from (None: all) and the keys to drop, they yield
    # batches of raw rows, the keys the rows stand for, and the dates seen.

    async def _stores(self, after: datetime | None, seen: set[Key]) -> AsyncIterator[Batch]:
        found = [w for w in await self.warehouses() if key(w) not in seen]
        if after is not None:
            found = [w for w in found if any(d >= after for d in dates(w))]
        values = [{"store_id": w.get("code"), "name": w.get("name")} for w in found]
        yield values, [key(w) for w in found], [d for w in found for d in dates(w)]

    async def _records(self, model: str, domain: list[Any], fields: Sequence[str],
                       seen: set[Key], values: Callable[[Record], dict[str, Any]],
                       **context: Any) -> AsyncIterator[Batch]:  # fmt: skip
        async for batch in self._search(model, domain, fields, **context):
            fresh = [r for r in batch if key(r) not in seen]
            yield [values(r) for r in fresh], [key(r) for r in fresh], dates(batch)

    async def _products(self, after: datetime | None, seen: set[Key]) -> AsyncIterator[Batch]:
        currency = code_of((await self.company()).get("currency"))
        domain: list[Any] = [["code", "!=", None]]
        if after is not None:
            # a template's price and a category's name do not move the product's own dates
            stamps = [*STAMPS, "template.write_date", "categories.write_date"]
            domain.append(since(after, stamps))
        # deactivated products too (active_test off): they come as discontinued
        async for batch in self._records("product.product", domain, PRODUCT_FIELDS, seen,
                                         lambda r: product_values(r, currency),
                                         active_test=False):  # fmt: skip
            yield batch

    async def _customers(self, after: datetime | None, seen: set[Key]) -> AsyncIterator[Batch]:
        domain: list[Any] = [["id", "!=", (await self.company()).get("party")]]
        if after is not None:
            mechanisms = [f"contact_mechanisms.{s}" for s in STAMPS]
            domain.append(since(after, [*STAMPS, *mechanisms]))
        async for batch in self._records("party.party", domain, PARTY_FIELDS, seen,
                                         customer_values):  # fmt: skip
            yield batch

    async def _sales(self, after: datetime | None, seen: set[Key]) -> AsyncIterator[Batch]:
        """A batch of sales with all their lines (an order stays in one page)."""
        domain: list[Any] = [["state", "in", list(SALE_STATES)], ["number", "!=", None]]
        if after is not None:
            domain.append(since(after, STAMPS))
        async for batch in self._search("sale.sale", domain, SALE_FIELDS):
            sales = {s["id"]: s for s in batch if key(s) not in seen}
            of_sales = [["sale", "in", list(sales)], ["type", "=", "line"], ["product", "!=", None]]
            fields = ["sale", "product.code", "quantity", "unit_price"]
            lines = await self._all("sale.line", of_sales, fields) if sales else []
            values = [sale_values(sales[line["sale"]], line) for line in lines]
            yield values, [key(s) for s in sales.values()], dates(batch)

    async def _stock(self, after: datetime | None, seen: set[Key]) -> AsyncIterator[Batch]:
        """All: every product's quantity per warehouse. Since a date: the quantities of the
        products that done moves touched since then."""
        done: list[Any] = [["state", "=", "done"]]
        products: list[Any] = [["code", "!=", None]]
        if after is None:
            # Read before the quantities: a move done meanwhile is read again next time.
            moments = await self._latest("stock.move", done)
            recent = [*done, since(max(moments) - self.overlap, STAMPS)] if moments else None
            keys = [key(m) for m in await self._all("stock.move", recent, STAMPS)] if recent else []
        else:
            moves = await self._all(
                "stock.move", [*done, since(after, STAMPS)], ["product", *STAMPS]
            )
            fresh = [m for m in moves if key(m) not in seen]
            moments, keys = dates(moves), [key(m) for m in fresh]
            if not fresh:
                yield [], keys, moments
                return
            products.append(["id", "in", sorted({m["product"] for m in fresh})])
        for warehouse in await self.warehouses():
            code = warehouse.get("code")
            async for batch in self._search("product.product", products, ["code", "quantity"],
                                            locations=[warehouse["id"]]):  # fmt: skip
                yield [{"sku": r.get("code"), "location": code, "quantity": r.get("quantity")}
                       for r in batch], [], []  # fmt: skip
        # The moves go with the last page: the quantities are whole only then.
        yield [], keys, moments

    async def _latest(self, model: str, domain: list[Any]) -> list[datetime]:
        """The latest write and create dates among ``model``'s records in ``domain``."""
        found = []
        for field in STAMPS:
            found += await self.transport.search_read(
                model, [*domain, [field, "!=", None]], [field],
                {"company": self.settings.company}, 1, f"{field} DESC")  # fmt: skip
        return dates(found)
