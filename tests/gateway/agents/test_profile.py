"""profile: counters exactly once under replay, latest values, caps, redirects, export, erasure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from gateway import keys as K
from gateway.bus import Bus
from gateway.datamart.profiles import (
    erase,
    explain,
    export,
    find_customer,
    get_profile,
    get_profiles,
)
from tests.gateway.agents.chain import BUS, COLLECTOR, Chain, at, ev, flush
from tests.gateway.agents.test_identity import pos_visit, web_visit


async def alice(chain: Chain) -> str:
    found = await find_customer(chain.client, chain.keys, "demo", "email", "alice@example.com")
    assert found is not None
    return found


async def snapshot(chain: Chain, customer: str) -> dict[str, Any]:
    profile = await get_profile(chain.client, chain.keys, customer)
    assert profile is not None
    return msgspec.to_builtins(profile)  # type: ignore[no-any-return]


async def test_counters_exactly_once_when_every_stage_replays(
    bus: Bus, client: aioredis.Redis, prefix: str, make_config: Callable[..., Any]
) -> None:
    """On the service Redis, an embedded one and Redis 6.2: the whole chain, then a replay."""
    config = make_config("", prefix, BUS, COLLECTOR)
    chain = Chain(config, client, bus)
    web, pos = web_visit(), pos_visit()
    await chain.publish(*web, pos[1], pos[0])  # a merge on the way
    await chain.run()
    await flush(chain)
    customer = await alice(chain)
    before, records = await snapshot(chain, customer), len(await chain.records())
    assert before["counters"]["orders"] == 1 and before["counters"]["events"] == 5
    await chain.replay("sessions", "identity", "profile")
    await chain.run("sessions", "identity", "profile")
    # every event went through again (identity saw each twice, republished by sessions)...
    assert len(await chain.events(K.IDENTIFIED)) == 15
    assert await snapshot(chain, customer) == before  # ...and changed nothing
    assert len(await chain.records()) == records


async def test_a_republished_entry_changes_nothing(chain: Chain) -> None:
    await chain.publish(*web_visit())
    await chain.run()
    customer = await alice(chain)
    before = await snapshot(chain, customer)
    rows = await chain.client.xrange(chain.keys.stream(K.IDENTIFIED))
    await chain.bus.add_packed([(K.IDENTIFIED, fields[K.ENTRY_FIELD]) for _, fields in rows])
    await chain.run("profile")
    assert await snapshot(chain, customer) == before


async def test_latest_values_win_by_event_time_not_arrival(chain: Chain) -> None:
    consent = {"channel": "email", "purpose": "marketing"}
    traits = {"email": "alice@example.com", "name": "Alice B."}
    paris = {"timezone": "Europe/Paris"}
    await chain.publish(
        [ev("i2", 10, type="identify", traits=traits, context=paris)],
        [ev("i1", 5, type="identify", traits={"name": "Alice A."})],  # older, arrives later
        [
            ev(
                "c1",
                11,
                type="track",
                name="Consent Updated",
                properties=consent | {"granted": True},
            )
        ],
        [ev("c2", 12, type="identify", traits={"consent": consent | {"granted": False}})],
    )
    await chain.run()
    profile = await get_profile(chain.client, chain.keys, await alice(chain))
    assert profile is not None
    assert profile.traits["name"].value == "Alice B."
    assert profile.timezone == "Europe/Paris"
    (granted,) = profile.consent.values()
    assert (granted.channel, granted.purpose, granted.granted) == ("email", "marketing", False)
    assert granted.event_id == "c2" and granted.source == "web"


async def test_recent_items_are_capped_newest_first(
    make_chain: Callable[..., Chain], service_redis_url: str
) -> None:
    chain = make_chain("[collector]\nrecent_items = 3")
    views = [
        ev(f"v{n}", n, type="track", name="Product Viewed",
           properties={"product_id": f"P{n % 5}", "category": "shoes" if n % 2 else "hats"})
        for n in range(8)
    ]  # fmt: skip
    sale = {"products": [{"sku": "S1", "category": "hats"}], "store_id": "S-2"}
    elsewhere = sale | {"store_id": "S-1"}
    orders = [
        ev(f"o{n}", 9 + n, type="track", name="Order Completed", properties=props)
        for n, props in enumerate([sale, elsewhere, sale])
    ]
    await chain.publish(views, orders[:1], orders[1:])
    await chain.run()
    customer = await find_customer(chain.client, chain.keys, "demo", "anonymous_id", "a1")
    profile = await get_profile(chain.client, chain.keys, str(customer))
    assert profile is not None
    assert [i.product_id for i in profile.viewed] == ["P2", "P1", "P0"]  # v7, v6, v5
    assert profile.interests == {"hats": 19.0, "shoes": 4.0}
    assert profile.stores == {"S-2": 2, "S-1": 1} and profile.preferred_store == "S-2"
    assert profile.counters.orders == 3 and profile.counters.units == 3
    # many at once (the sync agent's snapshots) read the same, on either protocol's replies
    resp3 = aioredis.Redis.from_url(service_redis_url, protocol=3)
    try:
        for client in (chain.client, resp3):
            many = await get_profiles(client, chain.keys, [str(customer), "c_nobody"])
            assert many == {str(customer): profile}
    finally:
        await resp3.aclose()


async def test_events_in_flight_for_a_merged_customer_go_to_the_survivor(chain: Chain) -> None:
    web, pos = web_visit(), pos_visit()
    await chain.publish(*web, pos[1])
    await chain.run()
    card = await find_customer(chain.client, chain.keys, "demo", "loyalty_card", "L-4242")
    await chain.publish(pos[0])
    await chain.run()
    survivor = await alice(chain)
    late = ev("late", 700, type="track", name="Email Opened", channel="email", customer_id=card)
    await chain.bus.publish(K.IDENTIFIED, [late])  # identified before the merge
    await chain.run("profile")
    profile = await get_profile(chain.client, chain.keys, survivor)
    assert profile is not None and profile.counters.emails_opened == 1
    assert not await chain.client.exists(chain.keys.profile(str(card), "done"))


async def test_export_then_erase(chain: Chain) -> None:
    web, pos = web_visit(), pos_visit()
    await chain.publish(*web, pos[1], pos[0])
    await chain.run()
    customer = await alice(chain)
    story = await explain(chain.client, chain.keys, customer)
    assert story is not None
    (card,) = story["merged_from"]
    data = await export(chain.client, chain.keys, card)  # the merged id will do
    assert data is not None and data["customer_id"] == customer
    assert data["profile"]["traits"]["email"]["value"] == "alice@example.com "
    assert "email:alice@example.com" in data["profile"]["identifiers"]
    assert [e["type"] for e in data["identity"]["log"]] == ["merge"]
    assert {s["visitor"] for s in data["open_sessions"]} == {"a1", "till7-r1001", "till7-r1002"}
    msgspec.json.encode(data)  # JSON-ready

    erased = await erase(chain.client, chain.keys, customer)
    assert sorted(erased) == sorted([customer, card])
    assert await get_profile(chain.client, chain.keys, customer) is None
    assert await explain(chain.client, chain.keys, customer) is None
    for kind, value in [("email", "alice@example.com"), ("loyalty_card", "L-4242"),
                        ("anonymous_id", "a1")]:  # fmt: skip
        assert await find_customer(chain.client, chain.keys, "demo", kind, value) is None
    left = [k async for k in chain.client.scan_iter(match=f"{chain.keys.prefix}:*")]
    personal = [k for k in left if b"{c:" in k or b":id:" in k or b"{v:" in k]
    assert personal == []
    assert await erase(chain.client, chain.keys, customer) == []  # idempotent


async def test_a_batch_overlapping_applied_events_counts_each_once(chain: Chain) -> None:
    """A customer's events of a batch go as one combined change: when some were applied
    already (a replay next to new events, or an event twice in one batch), the others still
    count, once each."""
    await chain.bus.publish(K.IDENTIFIED, [ev(f"p{n}", n, customer_id="c_1") for n in range(3)])
    await chain.run("profile")
    again = [ev(f"p{n}", n, customer_id="c_1") for n in (1, 2, 3, 3, 4)]
    await chain.bus.publish(K.IDENTIFIED, again)
    await chain.run("profile")
    profile = await get_profile(chain.client, chain.keys, "c_1")
    assert profile is not None
    assert (profile.counters.events, profile.counters.page_views) == (5, 5)
    assert chain.handler("profile").applied == 5
    assert profile.last_seen == at(4)
