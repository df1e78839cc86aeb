"""The star schema as versioned migrations: plain SQL that DuckDB and PostgreSQL both run.

A migration is never edited once released: a change is a new version appended to
:data:`MIGRATIONS`. Each is applied in one transaction together with its row in
``schema_migrations``, so a crash leaves it applied or not, never half. Types are the portable
subset (``VARCHAR``, ``INTEGER``, ``BIGINT``, ``DOUBLE PRECISION``, ``BOOLEAN``, ``DATE``,
``TIMESTAMPTZ``, ``JSON``); timestamps are UTC and ``date_key`` is the UTC day as YYYYMMDD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


#: Kept outside the migrations (it records them); created before any is looked at.
SCHEMA_MIGRATIONS: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)"""

_TABLES: Final = (
    """CREATE TABLE fact_event (
        event_id VARCHAR PRIMARY KEY,
        site VARCHAR, channel VARCHAR, type VARCHAR, name VARCHAR,
        ts TIMESTAMPTZ NOT NULL, received_at TIMESTAMPTZ, date_key INTEGER NOT NULL,
        customer_id VARCHAR, anonymous_id VARCHAR, session_id VARCHAR,
        is_bot BOOLEAN NOT NULL DEFAULT FALSE,
        device_type VARCHAR, browser VARCHAR, os VARCHAR, country VARCHAR,
        referrer_class VARCHAR, campaign VARCHAR, path VARCHAR,
        store_id VARCHAR, sku VARCHAR, category VARCHAR, revenue DOUBLE PRECISION,
        properties JSON
    )""",
    """CREATE TABLE fact_session (
        session_id VARCHAR PRIMARY KEY,
        site VARCHAR, channel VARCHAR, customer_id VARCHAR, anonymous_id VARCHAR,
        started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ, date_key INTEGER NOT NULL,
        landing_page VARCHAR, referrer_class VARCHAR, campaign VARCHAR,
        page_views INTEGER, events INTEGER, duration_s DOUBLE PRECISION,
        bounced BOOLEAN, converted BOOLEAN,
        device_type VARCHAR, browser VARCHAR, os VARCHAR, country VARCHAR
    )""",
    """CREATE TABLE fact_sale (
        order_id VARCHAR NOT NULL, line_no INTEGER NOT NULL,
        event_id VARCHAR, ts TIMESTAMPTZ NOT NULL, date_key INTEGER NOT NULL,
        site VARCHAR, channel VARCHAR, store_id VARCHAR, customer_id VARCHAR,
        sku VARCHAR, category VARCHAR,
        quantity DOUBLE PRECISION, unit_price DOUBLE PRECISION, discount DOUBLE PRECISION,
        revenue DOUBLE PRECISION, currency VARCHAR,
        kind VARCHAR NOT NULL DEFAULT 'sale' CHECK (kind IN ('sale', 'return')),
        PRIMARY KEY (order_id, line_no)
    )""",
    """CREATE TABLE fact_message (
        message_id VARCHAR PRIMARY KEY,
        ts TIMESTAMPTZ NOT NULL, date_key INTEGER NOT NULL,
        channel VARCHAR, campaign_id VARCHAR, customer_id VARCHAR,
        status VARCHAR NOT NULL CHECK (status IN
            ('sent', 'delivered', 'opened', 'clicked', 'unsubscribed', 'bounced')),
        event_id VARCHAR
    )""",
    """CREATE TABLE dim_customer (
        customer_id VARCHAR PRIMARY KEY,
        email_hash VARCHAR, phone_hash VARCHAR, erp_party_id VARCHAR, merged_into VARCHAR,
        first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ,
        traits JSON, counters JSON, updated_at TIMESTAMPTZ
    )""",
    """CREATE TABLE customer_segment (
        customer_id VARCHAR NOT NULL, segment VARCHAR NOT NULL,
        PRIMARY KEY (customer_id, segment)
    )""",
    """CREATE TABLE dim_product (
        sku VARCHAR PRIMARY KEY,
        name VARCHAR, category VARCHAR, price DOUBLE PRECISION, cost DOUBLE PRECISION,
        currency VARCHAR, updated_at TIMESTAMPTZ
    )""",
    """CREATE TABLE product_stock (
        sku VARCHAR NOT NULL, location VARCHAR NOT NULL,
        quantity DOUBLE PRECISION, confirmed_at TIMESTAMPTZ,
        PRIMARY KEY (sku, location)
    )""",
    """CREATE TABLE dim_store (
        store_id VARCHAR PRIMARY KEY, name VARCHAR, city VARCHAR, timezone VARCHAR
    )""",
    """CREATE TABLE dim_channel (channel VARCHAR PRIMARY KEY, name VARCHAR NOT NULL)""",
    """CREATE TABLE dim_date (
        date_key INTEGER PRIMARY KEY, date DATE NOT NULL,
        year INTEGER NOT NULL, quarter INTEGER NOT NULL, month INTEGER NOT NULL,
        day INTEGER NOT NULL, weekday INTEGER NOT NULL,
        iso_week INTEGER NOT NULL, iso_year INTEGER NOT NULL
    )""",
    """CREATE TABLE dim_campaign (
        campaign_id VARCHAR PRIMARY KEY,
        name VARCHAR, source VARCHAR, medium VARCHAR, created_at TIMESTAMPTZ
    )""",
)

#: Display names of the channels of ``gateway.events.Channel`` when this was written; a channel
#: added later comes with a migration of its own (a test checks none is missing).
_CHANNELS: Final = (
    ("web", "Web"),
    ("email", "Email"),
    ("pos", "Store till"),
    ("kiosk", "Kiosk"),
    ("mobile", "Mobile app"),
    ("erp", "ERP"),
    ("callcenter", "Call center"),
    ("api", "API"),
)

#: ``dim_date`` for 2000-2099 (36,525 days: small, and no load ever has to add dates).
_DATES: Final = """
INSERT INTO dim_date
SELECT CAST(extract(year FROM d) * 10000 + extract(month FROM d) * 100 + extract(day FROM d)
            AS INTEGER),
       CAST(d AS DATE),
       CAST(extract(year FROM d) AS INTEGER), CAST(extract(quarter FROM d) AS INTEGER),
       CAST(extract(month FROM d) AS INTEGER), CAST(extract(day FROM d) AS INTEGER),
       CAST(extract(isodow FROM d) AS INTEGER), CAST(extract(week FROM d) AS INTEGER),
       CAST(extract(isoyear FROM d) AS INTEGER)
FROM generate_series(TIMESTAMP '2000-01-01', TIMESTAMP '2099-12-31', INTERVAL '1 day') AS g(d)
ON CONFLICT DO NOTHING"""

MIGRATIONS: Final = (
    Migration(1, "star schema", _TABLES),
    Migration(
        2,
        "channels and dates",
        (
            "INSERT INTO dim_channel (channel, name) VALUES "
            + ", ".join(f"('{key}', '{name}')" for key, name in _CHANNELS)
            + " ON CONFLICT DO NOTHING",
            _DATES,
        ),
    ),
    # A product the ERP deactivated (discontinued) is kept, marked, and never offered.
    Migration(
        3,
        "inactive products",
        ("ALTER TABLE dim_product ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE",),
    ),
)


def pending(applied: set[int]) -> list[Migration]:
    """The migrations not yet in ``applied``, in version order."""
    return [m for m in sorted(MIGRATIONS, key=lambda m: m.version) if m.version not in applied]
