"""identity: one customer across channels, explainable merges, bounded merge storms."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from gateway import keys as K
from gateway.agents.identity import _Item, _Site
from gateway.datamart import identity
from gateway.datamart.profiles import explain, find_customer, get_profile, get_profiles
from tests.gateway.agents.chain import Chain, by_id, ev

VIEW = {"product_id": "P1", "category": "shoes"}
ORDER = {
    "order_id": "R-1002",
    "revenue": 59.9,
    "store_id": "S-12",
    "loyalty_card": "L-4242",
    "products": [{"product_id": "P1", "quantity": 1, "price": 59.9, "category": "shoes"}],
}


def web_visit() -> list[list]:  # type: ignore[type-arg]
    return [
        [ev("w1", 0), ev("w2", 1, type="track", name="Product Viewed", properties=VIEW)],
        [ev("w3", 2, type="identify", traits={"email": "Alice@Example.com", "name": "Alice"})],
    ]


def pos_visit(minutes: float = 600) -> list[list]:  # type: ignore[type-arg]
    till = {"store": {"id": "S-12"}}
    return [
        [
            ev("p1", minutes, type="identify", channel="pos", anonymous_id="till7-r1001",
               traits={"email": "alice@example.com ", "loyaltyCard": "L-4242"}, context=till),
        ],
        [
            ev("p2", minutes + 5, type="track", name="Order Completed", channel="pos",
               anonymous_id="till7-r1002", properties=ORDER, context=till),
        ],
    ]  # fmt: skip


async def customer(chain: Chain, kind: str, value: str) -> str | None:
    return await find_customer(chain.client, chain.keys, "demo", kind, value)


async def test_web_visitor_then_pos_purchase_is_one_customer_with_all_history(
    chain: Chain,
) -> None:
    await chain.publish(*web_visit())
    await chain.run()
    await chain.publish(*pos_visit())
    await chain.run()
    out = by_id(await chain.events(K.IDENTIFIED))
    alice = await customer(chain, "email", "ALICE@example.com")
    assert alice is not None
    assert {e.customer_id for e in out.values()} == {alice}
    for kind, value in [("anonymous_id", "a1"), ("loyalty_card", "L-4242"),
                        ("anonymous_id", "till7-r1002")]:  # fmt: skip
        assert await customer(chain, kind, value) == alice
    profile = await get_profile(chain.client, chain.keys, alice)
    assert profile is not None
    assert profile.counters.visits == 3  # the web visit and two till receipts
    assert profile.counters.events == 5 and profile.counters.page_views == 1
    assert profile.counters.orders == 1 and profile.counters.revenue == 59.9
    assert set(profile.channels) == {"web", "pos"}
    assert [i.product_id for i in profile.viewed] == ["P1"]
    assert [i.product_id for i in profile.bought] == ["P1"]
    assert profile.preferred_store == "S-12" and profile.interests == {"shoes": 6.0}
    assert profile.traits["name"].value == "Alice"
    assert profile.traits["email"].channel == "pos"  # the latest
    assert profile.identifiers == [
        "anonymous_id:a1",
        "anonymous_id:till7-r1001",
        "anonymous_id:till7-r1002",
        "email:alice@example.com",
        "loyalty_card:L-4242",
    ]


async def test_two_known_customers_merge_and_the_merge_is_explained(chain: Chain) -> None:
    web, pos = web_visit(), pos_visit()
    await chain.publish(*web, pos[1])  # the sale first, with only the card: a customer of its own
    await chain.run()
    alice = await customer(chain, "email", "alice@example.com")
    card = await customer(chain, "loyalty_card", "L-4242")
    assert alice and card and alice != card
    await chain.publish(pos[0])  # the till links the card to the e-mail address
    await chain.run()
    assert await customer(chain, "loyalty_card", "L-4242") == alice  # the first seen survives
    story = await explain(chain.client, chain.keys, card)
    assert story is not None and story["customer_id"] == alice and story["requested"] == card
    assert story["merged_from"] == [card]
    (merge,) = [e for e in story["log"] if e["type"] == "merge"]
    assert merge["survivor"] == alice and merge["merged"] == card
    assert merge["identifier"] == "email:alice@example.com"
    assert merge["merged_identifier"] == "loyalty_card:L-4242"
    assert merge["event"] == "p1" and merge["event_type"] == "identify"
    profile = await get_profile(chain.client, chain.keys, card)  # the merged id still answers
    assert profile is not None and profile.customer_id == alice and profile.merged_from == [card]
    assert profile.counters.orders == 1 and profile.counters.visits == 3
    assert [i.product_id for i in profile.bought] == ["P1"] and profile.preferred_store == "S-12"
    assert not await chain.client.exists(chain.keys.profile(card, "bought"))  # folded away
    assert not await chain.client.scard(chain.keys.pending_folds("demo"))
    batched = await get_profiles(chain.client, chain.keys, [alice, card, "c_nobody"])
    assert batched == {alice: profile, card: profile}  # as one by one; the merged id resolves


async def test_a_test_email_does_not_glue_ten_visitors_together(chain: Chain) -> None:
    for n in range(10):
        visitor = f"v{n}"
        await chain.publish(
            [ev(f"{visitor}-p", n, anonymous_id=visitor)],
            [ev(f"{visitor}-i", n + 0.5, anonymous_id=visitor, type="identify",
                traits={"email": "test@example.com"})],
        )  # fmt: skip
    await chain.run()
    owners = {v: await customer(chain, "anonymous_id", f"v{v}") for v in range(10)}
    sizes: dict[str | None, int] = {}
    for owner in owners.values():
        sizes[owner] = sizes.get(owner, 0) + 1
    assert max(sizes.values()) == 3  # collector.max_merges_per_identifier
    assert len(sizes) == 8
    glued = await customer(chain, "email", "test@example.com")
    story = await explain(chain.client, chain.keys, str(glued))
    assert story is not None
    flag = story["flags"]["email:test@example.com"]
    assert flag["reason"] == "max_merges_per_identifier" and flag["event"] == "v3-i"
    out = by_id(await chain.events(K.IDENTIFIED))
    assert out["v3-i"].customer_id == owners[3] != glued  # the refused identify stays with v3
    assert out["v9-i"].customer_id == owners[9]


async def test_a_shared_browser_keeps_two_users_apart(chain: Chain) -> None:
    await chain.publish(
        [ev("i1", 0, type="identify", user_id="u1", traits={"email": "one@example.com"})],
        [ev("t1", 1, type="track", name="Product Viewed", user_id="u1")],
        [ev("i2", 5, type="identify", user_id="u2", traits={"email": "two@example.com"})],
        [ev("t2", 6, type="track", name="Product Viewed", user_id="u2")],
    )
    await chain.run()
    u1, u2 = await customer(chain, "user_id", "u1"), await customer(chain, "user_id", "u2")
    assert u1 and u2 and u1 != u2
    assert await customer(chain, "email", "two@example.com") == u2
    out = by_id(await chain.events(K.IDENTIFIED))
    assert (out["t1"].customer_id, out["i2"].customer_id, out["t2"].customer_id) == (u1, u2, u2)


async def test_alias_and_the_identifier_cap(make_chain: Callable[..., Chain]) -> None:
    chain = make_chain("[collector]\nmax_identifiers = 3")
    batches = [[ev("i", 0, type="identify", user_id="u1", anonymous_id=None)]]
    for n in range(4):  # four more browsers, each with history before signing in
        batches += [
            [ev(f"p{n}", n + 1, anonymous_id=f"b{n}")],
            [ev(f"al{n}", n + 1.5, type="alias", anonymous_id=None, user_id="u1",
                previous_id=f"b{n}")],
        ]  # fmt: skip
    await chain.publish(*batches)
    await chain.run()
    u1 = await customer(chain, "user_id", "u1")
    assert [await customer(chain, "anonymous_id", f"b{n}") == u1 for n in range(4)] == [
        True, True, False, False,
    ]  # fmt: skip
    story = await explain(chain.client, chain.keys, str(u1))
    assert story is not None and story["flag"] == "max_identifiers"
    assert len(story["identifiers"]) == 3
    assert [e["reason"] for e in story["log"] if e["type"] == "refused"] == ["max_identifiers"] * 2


async def test_bots_and_anonymous_traffic_have_no_customer(chain: Chain) -> None:
    await chain.publish(
        [
            ev("bot", 0, context={"bot": True}),
            ev("dnt", 0, anonymous_id=None, context={"dnt": True}),
        ]
    )
    await chain.run()
    out = by_id(await chain.events(K.IDENTIFIED))
    assert out["bot"].customer_id is None and out["dnt"].customer_id is None
    assert await customer(chain, "anonymous_id", "a1") is None
    assert chain.handler("profile").applied == 0


async def test_a_replay_resolves_the_same_and_merges_nothing_again(chain: Chain) -> None:
    web, pos = web_visit(), pos_visit()
    await chain.publish(*web, pos[1], pos[0])
    await chain.run()
    alice = await customer(chain, "email", "alice@example.com")
    story = await explain(chain.client, chain.keys, str(alice))
    await chain.replay("identity")
    await chain.run("identity")
    out = await chain.events(K.IDENTIFIED)
    assert len(out) == 10 and {e.customer_id for e in out[5:]} == {alice}
    assert await explain(chain.client, chain.keys, str(alice)) == story


async def test_repeated_identifiers_resolve_once_and_follow_a_merge_between(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    await chain.publish(
        [ev("y", 0, type="identify", anonymous_id="a3", traits={"email": "bob@example.com"})],
        [ev("x", 10, type="identify", user_id="u1")],
    )
    await chain.run()
    bob, u1 = (
        await customer(chain, "email", "bob@example.com"),
        await customer(chain, "user_id", "u1"),
    )
    assert bob and u1 and bob != u1
    items: list[int] = []
    command = identity.resolve_command

    def counted(*args: Any) -> Any:
        items.append(len(args[2]))
        return command(*args)

    monkeypatch.setattr(identity, "resolve_command", counted)
    await chain.publish(
        [ev("p1", 20), ev("p2", 21), ev("n1", 21.5, anonymous_id="a5")],
        # u1 on another browser with bob's address: u1's customer (a1's) merges into bob's
        [ev("m", 22, type="identify", anonymous_id="a9", user_id="u1",
            traits={"email": "bob@example.com"})],
        [ev("p3", 23), ev("n2", 24, anonymous_id="a5")],
    )  # fmt: skip
    await chain.run()
    assert items == [3]  # p1 p2 p3 as one item, n1 n2 as one, m
    out = by_id(await chain.events(K.IDENTIFIED))
    assert (out["p1"].customer_id, out["p2"].customer_id) == (u1, u1)  # before the merge
    assert out["m"].customer_id == out["p3"].customer_id == bob  # after it, as one by one
    assert out["n1"].customer_id == out["n2"].customer_id not in (None, u1, bob)
    assert await customer(chain, "anonymous_id", "a1") == bob


async def test_settle_follows_merges_as_a_scan_of_them_all_would() -> None:
    """Settling looks merges up by the merged customer; on random batches (chains of merges,
    two merges made by one event, merges outside an item's span) it gives each event the
    customer a scan of every merge in order gives."""
    rng = random.Random(5)
    for _ in range(300):
        site = _Site("demo")
        places = list(range(60))
        rng.shuffle(places)
        customers = [f"c{n}" for n in range(8)]
        for n in range(rng.randint(1, 10)):
            taken = sorted(places[n * 6 : n * 6 + rng.randint(1, 6)])
            item = _Item(ev(f"e{taken[0]}"), taken[0], {})
            for place in taken[1:]:
                item.events.append(ev(f"e{place}"))
                item.places.append(place)
            item.customer = rng.choice([*customers, None])
            site.items.append(item)
        at = sorted(rng.sample(range(60), rng.randint(0, 12)))
        for place in at + at[: rng.randint(0, 2)]:  # some events make two merges
            site.merges.append((place, rng.choice(customers), rng.choice(customers)))
        site.merges.sort(key=lambda merge: merge[0])
        await site.settle()
        for item in site.items:
            for event, place in zip(item.events, item.places, strict=True):
                assert event.customer_id == scanned(site.merges, item, place)


def scanned(merges: list[tuple[int, str, str]], item: _Item, place: int) -> str | None:
    """The customer of the event at ``place``: every merge in order, as settling once did."""
    current = item.customer
    for at, merged, survivor in merges:
        if item.places[0] < at < place and merged == current:
            current = survivor
    return current
