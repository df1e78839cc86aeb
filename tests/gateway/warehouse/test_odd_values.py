"""Odd but valid values wherever the collector looks: every event goes through the whole pass
into the warehouse (events, and the visits they ended), on both engines. Ingest accepts any
JSON under ``properties``, ``traits`` and ``context``, and the collector's steps run compiled
(mypyc), where a value of a type the code did not expect is a TypeError that fails the whole
batch (retried, then dead-lettered)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from gateway.agents import AGENTS, AgentContext
from gateway.bus import Bus, Entry
from gateway.config import Config
from gateway.datamart.sessions import unpack_records
from gateway.events import Event, pack, parse_body
from gateway.keys import SESSIONS, Keys
from gateway.warehouse import Warehouse

#: The keys the collector's steps read (under properties, traits, context and what they hold).
KEYS = (  # noqa: SIM905
    "at bot browser c campaign campaign_id category channel consents country created_by "
    "currency device deviceType discount email event flag granted id location "
    "loyalty_card m medium n name order_id orders os page path phone price product_id "
    "products purpose quantity referrer revenue search sku source store store_id timezone "
    "token total traits type units url userAgentData visits utm_source utm_medium "
    "utm_campaign"
).split()
NAMES = ("Order Completed", "Order Refunded", "Product Viewed", "Product Added", "Consent Updated",
         "Email Sent", "Email Delivered", "Email Opened", "Email Link Clicked", "Email Bounced",
         "Push Sent", "Push Opened", "Signed Up")  # fmt: skip
SCALARS = (None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e308, -1e308,
           "", " ", "9.5", "-3", "x" * 300, "é中🙂", "A@B.example", "+33 6 12 34 56 78",
           "https://shop.example/p/1?utm_source=news&utm_medium=email", "not a url://",
           "2024-03-04T10:00:00Z", "Europe/Paris", "Mars/Olympus")  # fmt: skip
EVENTS = 600


def odd(rnd: random.Random, depth: int = 0) -> Any:
    roll = rnd.random()
    if depth < 3 and roll < 0.15:
        return [odd(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    if depth < 3 and roll < 0.35:
        return {rnd.choice(KEYS): odd(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}
    return rnd.choice(SCALARS)


def odd_fields(rnd: random.Random) -> dict[str, Any]:
    return {key: odd(rnd) for key in rnd.sample(KEYS, rnd.randint(0, 14))}


def odd_batches(seed: int) -> list[list[Event]]:
    """:data:`EVENTS` events as ingest accepts them, 50 a request, each with odd values at
    known keys."""
    rnd = random.Random(seed)
    messages = []
    for n in range(EVENTS):
        kind = rnd.choice(("track", "track", "page", "identify", "screen"))
        message: dict[str, Any] = {
            "type": kind,
            "messageId": f"odd-{n}",
            "anonymousId": f"a{rnd.randint(0, 40)}",
            "properties": odd_fields(rnd),
            "traits": odd_fields(rnd),
            "context": odd_fields(rnd),
            "timestamp": f"2024-03-04T{rnd.randint(0, 23):02}:{rnd.randint(0, 59):02}:00Z",
        }
        if rnd.random() < 0.5:
            message["userId"] = f"u{rnd.randint(0, 20)}"
        if kind == "track":
            message["event"] = rnd.choice(NAMES)
        messages.append(message)
    received = datetime(2024, 3, 5, tzinfo=UTC)
    batches = []
    for n in range(0, EVENTS, 50):
        body = json.dumps({"batch": messages[n : n + 50]}).encode()
        events, rejected = parse_body(body, site="demo", channel="web", received_at=received)
        assert rejected == []
        batches.append(events)
    return batches


async def test_odd_values_go_through_every_step_into_the_warehouse(
    warehouse: Warehouse,
    warehouse_section: str,
    redis_client: aioredis.Redis,
    prefix: str,
    make_config: Callable[..., Config],
) -> None:
    config = make_config("", prefix, warehouse_section, "[collector]\ntick_interval = 3600.0")
    bus = Bus(redis_client, Keys(prefix), config.bus)
    await bus.ensure_group(SESSIONS, "test")
    ctx = AgentContext(config, redis_client, bus.keys, bus, warehouse)
    handler = AGENTS["collector"].make(ctx)
    batches = odd_batches(seed=20261130)
    entries = [Entry(f"1-{i}", events, raw=pack(events)) for i, events in enumerate(batches)]
    await handler(entries)  # raises if any step cannot take a value
    rows = await warehouse.fetch("SELECT count(DISTINCT event_id) AS n FROM fact_event")
    assert rows[0]["n"] == EVENTS
    # the visits their odd pages, referrers and campaigns ended, into fact_session
    ended = await bus.read(SESSIONS, "test", "c", count=1000, block=0.01)
    records = sum(len(unpack_records(entry.raw)) for entry in ended)
    assert records > 50
    await AGENTS["sync-sessions"].make(ctx)(ended)
    rows = await warehouse.fetch("SELECT count(*) AS n FROM fact_session")
    assert rows[0]["n"] == records
