"""Typed configuration: ``config.toml`` → frozen dataclasses, validated at startup.

Loading order: the TOML file, then ``TOUCHPOINT_<SECTION>__<KEY>`` environment overrides
(``TOUCHPOINT_HTTP__PORT=8081``, ``TOUCHPOINT_SITES__DEMO__WRITE_KEY=...``), then validation.
Secrets are written ``{ env = "NAME" }`` and loaded into :class:`Secret`, whose repr is masked.
Any problem raises :class:`ConfigError` with one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from gateway.errors import ConfigError

ENV_PREFIX = "TOUCHPOINT_"
DEFAULT_PATH = "config.toml"


class Secret:
    """A value read from the environment (or written inline); never shown in reprs or logs."""

    __slots__ = ("_value", "env")

    def __init__(self, value: str | None, env: str | None = None) -> None:
        self._value = value
        self.env = env

    @property
    def is_set(self) -> bool:
        return bool(self._value)

    def get(self) -> str:
        if not self._value:
            raise ConfigError("environment", self.env or "secret", "is not set")
        return self._value

    def __repr__(self) -> str:
        source = f"env {self.env}" if self.env else "inline"
        return f"Secret({source}, {'set' if self.is_set else 'unset'})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self._value, self.env) == (other._value, other.env)

    def __hash__(self) -> int:
        return hash((self._value, self.env))


Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: Port = 8080
    #: Largest accepted request body (bytes); the Segment batch limit is 500 KB.
    max_body: Positive = 512_000
    #: Seconds in-flight requests get to finish on shutdown.
    shutdown_timeout: Seconds = 10.0


@dataclass(frozen=True)
class DataConfig:
    #: Where local state lives: the embedded Redis (append-only file), the DuckDB warehouse.
    dir: str = "var"


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class RedisConfig:
    #: ``redis://`` / ``rediss://`` / ``unix://`` URL of a Redis >= 6.2; empty = embedded.
    url: Secret = field(default_factory=lambda: Secret(""))
    #: Prefix of every key Touchpoint writes, so several deployments can share one server.
    prefix: Name = "tp"
    #: Embedded server only: fsync policy of its append-only file.
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    #: Seconds a command may take before ingest gives up and answers 503.
    timeout: Seconds = 2.0


@dataclass(frozen=True)
class BusConfig:
    #: Seconds an entry is kept once every consumer group has acknowledged it.
    retention: Seconds = 86_400.0
    #: Deliveries of one entry before it moves to the dead-letter stream.
    max_deliveries: Positive = 5
    #: Seconds an entry may sit unacknowledged before another consumer reclaims it.
    claim_idle: Seconds = 60.0
    #: Seconds a read blocks waiting for new entries.
    block: Seconds = 1.0
    #: Entries one read returns at most.
    batch: Positive = 200
    #: Seconds between retention trims.
    trim_interval: Seconds = 60.0


@dataclass(frozen=True)
class AgentsConfig:
    #: Agents ``touchpoint serve`` runs in-process (``touchpoint agent NAME`` runs one alone).
    run: tuple[Name, ...] = (
        "channel-counts",
        "filter",
        "sessions",
        "identity",
        "profile",
        "sync",
        "sync-sessions",
        "erp",
    )


@dataclass(frozen=True)
class CollectorConfig:
    """The collector agents (filter, sessions, identity, profile) and the data mart."""

    #: Seconds an event id is remembered to drop duplicates (filter) and absorb replays
    #: (sessions, profile).
    dedup_window: Seconds = 86_400.0
    #: Seconds of inactivity after which a visit (session) ends.
    session_timeout: Seconds = 1800.0
    #: Customers one identifier may glue together; beyond, the link is refused and flagged.
    max_merges_per_identifier: Positive = 3
    #: Identifiers one customer may hold; beyond, the link is refused and flagged.
    max_identifiers: Positive = 50
    #: Recent items kept per customer and list (viewed, carted, bought).
    recent_items: Positive = 20
    #: Seconds between an agent's periodic chores (closing idle sessions, finishing merges).
    tick_interval: Seconds = 60.0


@dataclass(frozen=True)
class ReadinessConfig:
    #: ``/readyz`` turns red when an agent's group lags by more entries than this.
    max_lag: Positive = 100_000


@dataclass(frozen=True)
class WarehouseConfig:
    engine: Literal["duckdb", "postgres"] = "duckdb"
    #: PostgreSQL DSN (engine = "postgres"); DuckDB keeps its file under ``data.dir``.
    dsn: Secret = field(default_factory=lambda: Secret(""))
    #: Key of the hashes that stand for emails and phone numbers; when unset a random one is
    #: made once and kept under ``data.dir``.
    pii_key: Secret = field(default_factory=lambda: Secret(None))
    #: DuckDB: threads running reads (queries), each with its own cursor; writes have one.
    readers: Positive = 4
    #: DuckDB: threads one query may use; 0 = one more than the cores (bench/olap.py: DuckDB's
    #: own default, one per core, made the cube query ~1.6x slower on 2 cores).
    threads: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: PostgreSQL: connections in the pool.
    pool_size: Positive = 10
    #: Rows an OLAP query may return; a larger result is refused (narrow the query).
    max_rows: Positive = 100_000


@dataclass(frozen=True)
class AdminConfig:
    #: Bearer token of the admin API and dashboard; when unset a random one is made per run.
    token: Secret = field(default_factory=lambda: Secret(None))


@dataclass(frozen=True)
class SiteConfig:
    #: Public key a site's tracker or SDK sends (as HTTP Basic user name).
    write_key: Annotated[str, msgspec.Meta(min_length=8)]
    #: Origins whose pages may send events (CORS); ``"*"`` allows any. Server-side SDKs send
    #: no Origin and are not concerned.
    allowed_origins: tuple[str, ...] = ()
    #: Honour Do-Not-Track and Global Privacy Control: no identifiers, no cookies.
    honor_dnt: bool = True
    #: Zero the last IPv4 octet / last 80 bits of IPv6 before an address is stored.
    anonymize_ip: bool = True
    #: Domain of the tracker's first-party cookie (empty: the page's host).
    cookie_domain: str = ""
    #: Lifetime of the tracker's anonymous-id cookie, in days.
    cookie_days: Positive = 365
    #: IANA time zone of the site: its visits end at local midnight.
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(
                f"timezone: unknown time zone {self.timezone!r} (an IANA name: 'Europe/Paris')"
            ) from None


@dataclass(frozen=True)
class WebConfig:
    #: Seconds a client ``messageId`` is remembered to drop duplicates at ingest (0: off).
    #: Later replays are absorbed by the idempotent sinks.
    dedup_window: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    #: Parsed user agents kept in the LRU cache.
    ua_cache: Positive = 10_000
    #: Take the client address from X-Forwarded-For (only behind a proxy you trust).
    trust_forwarded: bool = False
    #: Salt of the anonymous ids the log importer derives from IP + user agent; when unset a
    #: random one is made once and kept under ``data.dir``.
    visitor_salt: Secret = field(default_factory=lambda: Secret(None))


@dataclass(frozen=True)
class PosConfig:
    #: Seconds a till's signed request may be away from the gateway's clock (either way); its
    #: nonce is remembered twice as long, so a replay is refused for as long as it could pass.
    timestamp_window: Seconds = 300.0
    #: Seconds without a touch after which a kiosk ends its session and returns to idle.
    kiosk_idle: Seconds = 60.0
    #: Products a kiosk shows as offers to a customer.
    kiosk_offers: Positive = 6


@dataclass(frozen=True)
class KioskConfig:
    #: The kiosk's bearer token (a secret); when unset a random one is made per run and logged.
    token: Secret = field(default_factory=lambda: Secret(None))


@dataclass(frozen=True)
class TerminalConfig:
    #: HMAC-SHA256 keys of a till; each one is valid, so a key is rotated by adding the next
    #: one, moving the till to it, then removing the old one. None set: the till cannot sign.
    keys: tuple[Secret, ...] = ()


@dataclass(frozen=True)
class StoreConfig:
    #: The site (``[sites.NAME]``) whose customers and reports the store's sales join.
    site: Name
    #: For people: reports and the dashboard.
    name: str = ""
    #: IANA time zone of the store: a till's local time without an offset is read in it.
    timezone: str = "UTC"
    #: ISO 4217 code of a transaction that does not name its currency.
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] = "EUR"
    #: The store's tills, by terminal id (unique across stores: the id alone names the till).
    terminals: Mapping[Name, TerminalConfig] = field(default_factory=dict)
    #: The store's touch-screen kiosks, by kiosk id (unique across stores, like terminals).
    kiosks: Mapping[Name, KioskConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(
                f"timezone: unknown time zone {self.timezone!r} (an IANA name: 'Europe/Paris')"
            ) from None


@dataclass(frozen=True)
class ProductColumns:
    """The drop files' column (CSV) or element (XML) names of a product's fields."""

    sku: str = "sku"
    name: str = "name"
    category: str = "category"
    price: str = "price"
    cost: str = "cost"
    currency: str = "currency"


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
class ErpFilesConfig:
    #: The watched drop folder; empty: ``<data.dir>/erp-drop``.
    dir: str = ""
    #: Drop the demo catalogue (gateway/data/demo) in the folder the first time it is opened.
    seed_demo: bool = True
    products: ProductColumns = field(default_factory=ProductColumns)
    stock: StockColumns = field(default_factory=StockColumns)
    stores: StoreColumns = field(default_factory=StoreColumns)
    customers: CustomerColumns = field(default_factory=CustomerColumns)


@dataclass(frozen=True)
class ErpConfig:
    #: Where the catalogue comes from: ``files`` (CSV/XML drops).
    connector: Literal["files"] = "files"
    #: The site ``Stock Changed`` events are published for.
    site: Name = "demo"
    #: Seconds between syncs of each entity (stock most often).
    products_interval: Seconds = 60.0
    stock_interval: Seconds = 15.0
    stores_interval: Seconds = 600.0
    #: Most seconds between retries of a failing sync (the backoff doubles up to this).
    max_backoff: Seconds = 300.0
    files: ErpFilesConfig = field(default_factory=ErpFilesConfig)


@dataclass(frozen=True)
class Config:
    http: HttpConfig = field(default_factory=HttpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    log: LogConfig = field(default_factory=LogConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sites: Mapping[Name, SiteConfig] = field(default_factory=dict)
    pos: PosConfig = field(default_factory=PosConfig)
    stores: Mapping[Name, StoreConfig] = field(default_factory=dict)
    erp: ErpConfig = field(default_factory=ErpConfig)
    #: The file this was loaded from (for messages); not a setting.
    source: str = field(default="<defaults>", compare=False)

    @property
    def data_dir(self) -> Path:
        """``data.dir``, relative paths taken from the config file's folder."""
        path = Path(self.data.dir)
        if not path.is_absolute() and self.source not in ("<defaults>", "<string>"):
            path = Path(self.source).resolve().parent / path
        return path

    @property
    def erp_drop_dir(self) -> Path:
        """``erp.files.dir``, relative paths taken like ``data.dir``; default under it."""
        if not self.erp.files.dir:
            return self.data_dir / "erp-drop"
        path = Path(self.erp.files.dir)
        if not path.is_absolute() and self.source not in ("<defaults>", "<string>"):
            path = Path(self.source).resolve().parent / path
        return path

    def site_for_key(self, write_key: str) -> str | None:
        for name, site in self.sites.items():
            if site.write_key == write_key:
                return name
        return None


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Load, override from the environment and validate; raise ConfigError on any problem."""
    path = Path(path or os.environ.get("TOUCHPOINT_CONFIG", DEFAULT_PATH))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from exc
    return loads(text, source=str(path), env=env)


def loads(text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from exc
    _check_keys(data, Config, "", source)
    _apply_env(data, env, source)
    _resolve_secrets(data, Config, "", source, env)
    try:
        config = msgspec.convert(data, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _config_error(source, exc) from None
    _check_stores(config, source)
    return dataclasses.replace(config, source=source)


def _check_stores(config: Config, source: str) -> None:
    """A store names a configured site; a terminal or kiosk id names one device in all stores."""
    owners: dict[str, str] = {}
    for name, store in config.stores.items():
        if store.site not in config.sites:
            known = ", ".join(sorted(config.sites)) or "none"
            raise ConfigError(source, f"stores.{name}.site", f"no site {store.site!r} ({known})")
        for terminal in store.terminals:
            if terminal in owners:
                raise ConfigError(
                    source,
                    f"stores.{name}.terminals.{terminal}",
                    f"terminal id already used by store {owners[terminal]!r} (ids are unique)",
                )
            owners[terminal] = name
        for kiosk in store.kiosks:
            if kiosk in owners:
                raise ConfigError(
                    source,
                    f"stores.{name}.kiosks.{kiosk}",
                    f"id already used by store {owners[kiosk]!r} (ids are unique)",
                )
            owners[kiosk] = name


# --- the walk over dataclass fields -------------------------------------------------------------


def _fields(cls: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "source"}


def _strip(hint: Any) -> Any:
    """``Annotated[int, Meta]`` → ``int``."""
    while typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _mapping_value(hint: Any) -> Any | None:
    hint = _strip(hint)
    if typing.get_origin(hint) in (Mapping, dict):
        return typing.get_args(hint)[1]
    return None


def _check_keys(data: dict[str, Any], cls: Any, prefix: str, source: str) -> None:
    known = _fields(cls)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            choices = ", ".join(sorted(known))
            raise ConfigError(source, dotted, f"unknown setting (expected one of: {choices})")
        hint = _strip(known[key])
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _check_keys(value, hint, dotted + ".", source)
        elif (inner := _mapping_value(hint)) is not None and isinstance(value, dict):
            inner = _strip(inner)
            if dataclasses.is_dataclass(inner):
                for name, item in value.items():
                    if isinstance(item, dict):
                        _check_keys(item, inner, f"{dotted}.{name}.", source)


def _validate(value: Any, hint: Any, key: str, source: str) -> None:
    """Validate one item of a table of tables, so an error names the item (``sites.demo``)."""
    try:
        msgspec.convert(value, hint, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        error = _config_error(source, exc)
        inner = error.key if error.key != "(top level)" else ""
        raise ConfigError(source, f"{key}.{inner}".rstrip("."), error.reason) from None


def _resolve_secrets(
    data: dict[str, Any], cls: Any, prefix: str, source: str, env: Mapping[str, str]
) -> None:
    for key, hint in _fields(cls).items():
        if key not in data:
            continue
        value, hint = data[key], _strip(hint)
        dotted = f"{prefix}{key}"
        if hint is Secret:
            data[key] = _secret(value, dotted, source, env)
        elif _is_secrets(hint):
            if not isinstance(value, list):
                raise ConfigError(source, dotted, 'expected a list of strings or { env = "NAME" }')
            data[key] = [_secret(v, f"{dotted}[{i}]", source, env) for i, v in enumerate(value)]
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _resolve_secrets(value, hint, dotted + ".", source, env)
        elif (inner := _mapping_value(hint)) is not None and isinstance(value, dict):
            inner = _strip(inner)
            if dataclasses.is_dataclass(inner):
                for name, item in value.items():
                    if isinstance(item, dict):
                        _resolve_secrets(item, inner, f"{dotted}.{name}.", source, env)
                    _validate(item, inner, f"{dotted}.{name}", source)


def _is_secrets(hint: Any) -> bool:
    """``tuple[Secret, ...]``: several secrets, e.g. a till's current and next key."""
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (Secret,)


def _secret(value: Any, key: str, source: str, env: Mapping[str, str]) -> Secret:
    if isinstance(value, Secret | str):
        return value if isinstance(value, Secret) else Secret(value)
    if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
        return Secret(env.get(value["env"]), env=value["env"])
    raise ConfigError(source, key, 'expected a string or { env = "NAME" }')


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret and isinstance(obj, Secret):
        return obj
    raise NotImplementedError


def _apply_env(data: dict[str, Any], env: Mapping[str, str], source: str) -> None:
    """Apply ``TOUCHPOINT_A__B__C=value``: each ``__`` descends one table."""
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        where = f"{source} (environment {name})"
        hint = _hint_for(parts, where)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(where, ".".join(parts), "is not a table")
            node = child
        node[parts[-1]] = _coerce(raw, hint, ".".join(parts), where)


def _hint_for(parts: list[str], where: str) -> Any:
    hint: Any = Config
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        base = _strip(hint)
        if dataclasses.is_dataclass(base):
            fields = _fields(base)
            if part not in fields:
                raise ConfigError(where, dotted, "unknown setting")
            hint = fields[part]
        elif (inner := _mapping_value(base)) is not None:
            hint = inner
        else:
            raise ConfigError(where, dotted, "unknown setting")
    return hint


def _coerce(raw: str, hint: Any, key: str, where: str) -> Any:
    """An environment string → the setting's type (validated again with the rest)."""
    base = _strip(hint)
    if base is Secret:
        return Secret(raw)
    origin = typing.get_origin(base)
    if origin in (tuple, list):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if origin in (typing.Union, types.UnionType) or dataclasses.is_dataclass(base):
        raise ConfigError(where, key, "cannot be set from the environment")
    if base is str or origin is Literal:
        return raw
    try:
        return msgspec.convert(raw, hint, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(where, key, str(exc).split(" - at ")[0].replace("`", "")) from None


def _config_error(source: str, exc: msgspec.ValidationError) -> ConfigError:
    message = str(exc)
    reason, _, at = message.partition(" - at ")
    key = at.strip("`").removeprefix("$").removeprefix(".")
    if reason.startswith("Object missing required field"):
        missing = reason.split("`")[1]
        key, reason = (f"{key}.{missing}" if key else missing), "is required"
    return ConfigError(source, key or "(top level)", reason.replace("`", ""))
