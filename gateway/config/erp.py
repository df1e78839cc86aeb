"""The ERP connector's section: which connector, its intervals, and each connector's own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.config.values import Name, Positive, Seconds, Secret


@dataclass(frozen=True)
class ProductColumns:
    """The drop files' column (CSV) or element (XML) names of a product's fields."""

    sku: str = "sku"
    name: str = "name"
    category: str = "category"
    price: str = "price"
    cost: str = "cost"
    currency: str = "currency"
    #: Whether it is still sold (``false``/``0``: discontinued, never offered; empty: yes).
    active: str = "active"


@dataclass(frozen=True)
class StockColumns:
    sku: str = "sku"
    location: str = "location"
    quantity: str = "quantity"


@dataclass(frozen=True)
class StoreColumns:
    store_id: str = "store_id"
    name: str = "name"
    city: str = "city"
    timezone: str = "timezone"


@dataclass(frozen=True)
class CustomerColumns:
    party_id: str = "party_id"
    email: str = "email"
    phone: str = "phone"
    name: str = "name"


@dataclass(frozen=True)
class SaleColumns:
    order_id: str = "order_id"
    sku: str = "sku"
    quantity: str = "quantity"
    unit_price: str = "unit_price"
    currency: str = "currency"
    ordered_at: str = "ordered_at"
    party_id: str = "party_id"
    store_id: str = "store_id"
    state: str = "state"


@dataclass(frozen=True)
class ErpFilesConfig:
    #: The watched drop folder; empty: ``<data.dir>/erp-drop``.
    dir: str = ""
    #: Drop the demo catalogue (gateway/data/demo) in the folder the first time it is opened.
    seed_demo: bool = True
    products: ProductColumns = field(default_factory=ProductColumns)
    stock: StockColumns = field(default_factory=StockColumns)
    stores: StoreColumns = field(default_factory=StoreColumns)
    customers: CustomerColumns = field(default_factory=CustomerColumns)
    sales: SaleColumns = field(default_factory=SaleColumns)


@dataclass(frozen=True)
class ErpTrytonConfig:
    #: The Tryton server (``trytond``), e.g. ``http://erp.internal:8000``.
    url: str = "http://127.0.0.1:8000"
    #: The Tryton database name (the ``<db>`` of ``/<db>/rpc/``).
    database: str = "tryton"
    #: JSON-RPC login, used when no ``api_key`` is set.
    user: str = "admin"
    password: Secret = field(default_factory=lambda: Secret(None))
    #: A user application key for the REST API (stateless; preferred when set).
    api_key: Secret = field(default_factory=lambda: Secret(None))
    #: The company (``company.company`` id) whose prices and stock are read.
    company: Positive = 1
    #: Codes of the warehouses whose stock is synced (each a location); empty: every warehouse.
    warehouses: tuple[str, ...] = ()
    #: Seconds re-read before the cursor (records committed late); repeats are dropped.
    overlap: Seconds = 60.0
    #: Records per request.
    page_size: Positive = 1000
    #: Seconds one request may take.
    timeout: Seconds = 30.0


@dataclass(frozen=True)
class ErpSqlConfig:
    #: The ERP database, read with a read-only user: ``postgresql://...`` or ``mysql://...``.
    dsn: Secret = field(default_factory=lambda: Secret(""))
    #: One query per entity (empty: the entity is not read). Columns are named like the rows
    #: (``sku``, ``name``, ``price``...) plus ``cursor``; ``:cursor`` is bound to the last one
    #: kept (``initial_cursor`` on a full sync).
    products: str = ""
    stock: str = ""
    stores: str = ""
    customers: str = ""
    sales: str = ""
    #: The value ``:cursor`` takes on a full sync (below every real cursor).
    initial_cursor: str = "1970-01-01 00:00:00"
    #: Rows fetched (and loaded) per page.
    page_size: Positive = 5000
    #: Seconds one query may take.
    timeout: Seconds = 300.0


@dataclass(frozen=True)
class ErpConfig:
    #: Where the catalogue comes from: ``files`` (CSV/XML drops), ``tryton``, ``sql``.
    connector: Literal["files", "tryton", "sql"] = "files"
    #: The site ERP events (stock changes, customers, sales) are published for.
    site: Name = "demo"
    #: Seconds between syncs of each entity (stock most often).
    products_interval: Seconds = 60.0
    stock_interval: Seconds = 15.0
    stores_interval: Seconds = 600.0
    customers_interval: Seconds = 300.0
    sales_interval: Seconds = 120.0
    #: Most seconds between retries of a failing sync (the backoff doubles up to this).
    max_backoff: Seconds = 300.0
    #: Stock not confirmed by the ERP for this many seconds counts as stale (as does stock
    #: whose last sync failed).
    stale_after: Seconds = 900.0
    #: What the push engine does with stale stock: ``skip`` (treat as out of stock: never
    #: push it) or ``last_known`` (trust the last known levels).
    stale_stock: Literal["skip", "last_known"] = "skip"
    #: HMAC-SHA256 key of ``POST /v1/erp/notify``; unset: the endpoint answers 404.
    notify_key: Secret = field(default_factory=lambda: Secret(None))
    #: Seconds a notify signature stays valid (its timestamp's distance from now).
    notify_window: Seconds = 300.0
    files: ErpFilesConfig = field(default_factory=ErpFilesConfig)
    tryton: ErpTrytonConfig = field(default_factory=ErpTrytonConfig)
    sql: ErpSqlConfig = field(default_factory=ErpSqlConfig)
