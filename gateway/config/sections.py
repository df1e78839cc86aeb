"""The gateway's sections: HTTP, data, Redis, the bus, agents, warehouse, admin, sites, stores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from gateway.config.values import LONGEST, Name, Port, Positive, Seconds, Secret


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
        "collector",
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
    #: Entries the collector agent reads at once, in place of ``bus.batch``: a larger batch
    #: makes fewer, larger profile and identity script calls (bench/collector.py) and holds
    #: more events in memory.
    batch: Positive = 800


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
    readers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    #: DuckDB: threads one query may use; 0 = one more than the cores (bench/olap.py: DuckDB's
    #: own default, one per core, made the cube query ~1.6x slower on 2 cores).
    threads: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
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
    dedup_window: Annotated[float, msgspec.Meta(ge=0, le=LONGEST)] = 3600.0
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
    #: Seconds a kiosk's coupon can be redeemed at a till after it was issued (30 days).
    coupon_valid: Seconds = 2_592_000.0


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
