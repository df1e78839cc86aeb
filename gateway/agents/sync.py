"""sync: the converter from the collector's streams into the warehouse.

``sync`` reads the identified events and loads ``fact_event``, ``fact_sale`` and
``fact_message``; on its tick it snapshots the profiles of the customers touched since into
``dim_customer`` (emails and phone numbers as keyed hashes only). ``sync-sessions`` loads
finished sessions into ``fact_session``. Loads are idempotent on the tables' keys, so a crash
between the warehouse write and the ack adds nothing on replay; the runtime reads the next batch
only once this one is written (backpressure), and the group's lag is the sync's lag.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis

from gateway.agents.facts import Row, date_key, paced_fact_records
from gateway.agents.runtime import Handler
from gateway.bus import Entry
from gateway.datamart import profiles
from gateway.datamart.lua import text
from gateway.datamart.profiles import Profile
from gateway.datamart.records import SessionRecord
from gateway.datamart.sessions import unpack_records
from gateway.events import Event
from gateway.keys import Keys
from gateway.warehouse import Warehouse
from gateway.warehouse.pii import split_traits

#: Customers snapshotted per round trip group on a tick.
SNAPSHOT_BATCH = 2000

#: Traits that name a person: never copied into the warehouse, hashed or not.
NAME_TRAITS = frozenset({"name", "firstName", "lastName", "first_name", "last_name", "address"})


class EventsSync:
    """The ``sync`` handler: facts per batch; customer snapshots on its tick.

    A batch's customers are only noted (one SADD); every ``collector.tick_interval`` the noted
    set is renamed aside (atomically: later batches note into a fresh one), their profiles are
    read in three round trips and upserted into ``dim_customer``, and the set is dropped. A
    crash leaves the renamed set, which the next tick takes first.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        redis: aioredis.Redis,
        keys: Keys,
        pii_key: bytes,
        tick_interval: float,
    ) -> None:
        self.warehouse = warehouse
        self.redis = redis
        self.keys = keys
        self.pii_key = pii_key
        self.tick_interval = tick_interval

    async def __call__(self, entries: Sequence[Entry]) -> None:
        await self.load([e for entry in entries for e in entry.events])

    async def load(self, events: Sequence[Event]) -> None:
        """``events`` (identified) into the facts; their customers noted for the tick."""
        loads = await paced_fact_records(events)
        if loads:  # one transaction: a batch's facts are all in or all out
            await self.warehouse.insert_records(loads)
        customers = {e.customer_id for e in events if e.customer_id}
        if customers:
            await self.redis.sadd(self.keys.sync_touched(), *customers)

    async def _some(self, key: str) -> list[Any]:
        members = await self.redis.srandmember(key, SNAPSHOT_BATCH)
        return members if isinstance(members, list) else []

    async def tick(self) -> None:
        """Snapshot the profiles of the customers noted since the last tick."""
        touched, taking = self.keys.sync_touched(), self.keys.sync_touched_taken()
        if not await self.redis.exists(taking):
            if not await self.redis.exists(touched):
                return
            await self.redis.rename(touched, taking)
        while ids := [text(i) for i in await self._some(taking)]:
            found = await profiles.get_profiles(self.redis, self.keys, ids)
            rows = [row for p in found.values() for row in customer_rows(p, self.pii_key)]
            if rows:
                await self.warehouse.upsert("dim_customer", _unique(rows))
            await self.redis.srem(taking, *ids)


def sessions_handler(warehouse: Warehouse) -> Handler:
    async def sync(entries: Sequence[Entry]) -> None:
        largest: dict[str, Row] = {}
        for entry in entries:
            for record in unpack_records(entry.raw):
                kept = largest.get(record.session_id)
                if kept is None or record.events >= kept["events"]:
                    largest[record.session_id] = session_row(record)
        if largest:
            # A record published again replaces the row only when it has as many events or
            # more (the table's rule: gateway.warehouse.base.GROWING), within the batch too.
            await warehouse.upsert("fact_session", list(largest.values()))

    return sync


def customer_rows(profile: Profile, pii_key: bytes) -> list[Row]:
    """The survivor's ``dim_customer`` row, and one per customer folded into it."""
    traits = {name: t.value for name, t in profile.traits.items() if name not in NAME_TRAITS}
    emails = [i.partition(":")[2] for i in profile.identifiers if i.startswith("email:")]
    if emails and "email" not in traits:
        traits["email"] = emails[0]
    kept, email_hash, phone_hash = split_traits(pii_key, traits)
    erp = [i.partition(":")[2] for i in profile.identifiers if i.startswith("erp_party_id:")]
    now = datetime.now(UTC)
    row = {
        "customer_id": profile.customer_id,
        "email_hash": email_hash,
        "phone_hash": phone_hash,
        "erp_party_id": erp[0] if erp else None,
        "merged_into": None,
        "first_seen": profile.first_seen,
        "last_seen": profile.last_seen,
        "traits": json.dumps(kept, default=str),
        "counters": json.dumps(msgspec.to_builtins(profile.counters)),
        "updated_at": now,
    }
    folded = [
        {**row, "customer_id": merged, "merged_into": profile.customer_id, "traits": "{}",
         "counters": "{}", "email_hash": None, "phone_hash": None, "erp_party_id": None}
        for merged in profile.merged_from
    ]  # fmt: skip
    return [row, *folded]


def session_row(record: SessionRecord) -> Row:
    return {
        "session_id": record.session_id,
        "site": record.site,
        "channel": record.channel,
        "customer_id": record.customer_id,
        "anonymous_id": record.anonymous_id,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "date_key": date_key(record.started_at),
        "landing_page": record.landing_page,
        "referrer_class": record.referrer_class,
        "campaign": record.campaign.get("name"),
        "page_views": record.pages,
        "events": record.events,
        "duration_s": record.duration,
        "bounced": record.bounced,
        "converted": record.converted,
        "device_type": record.device_type,
        "browser": record.browser,
        "os": record.os,
        "country": None,
    }


def _unique(rows: list[Row]) -> list[Row]:
    """The last row per customer (one statement must not name a key twice)."""
    by_key: dict[Any, Row] = {}
    for row in rows:
        by_key[row["customer_id"]] = row
    return list(by_key.values())
