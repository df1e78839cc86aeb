"""What an event changes in a profile, and the fold of a merged profile, as data."""

from __future__ import annotations

import json

from gateway.datamart.deltas import encode, event_delta, fold_delta
from gateway.datamart.records import Snapshot
from gateway.datamart.sessions import ms
from tests.gateway.agents.chain import at, ev

T3 = ms(at(3))


def test_an_order() -> None:
    order = ev(
        "o1",
        3,
        type="track",
        name="Order Completed",
        channel="pos",
        session_id="s1",
        properties={
            "store_id": "S-12",
            "products": [
                {"product_id": "P1", "price": 10.0, "quantity": 2, "category": "shoes"},
                {"sku": "K2", "price": 5.0, "category": "socks"},
                {"product_id": "P3", "price": 1.0, "quantity": 1, "category": "shoes"},
            ],
        },
    )
    delta = event_delta(order)
    assert delta.incr == {"events": 1, "orders": 1, "units": 4}
    assert delta.fincr == {"revenue": 26.0}
    assert delta.recent == {"bought": [("P1", T3), ("K2", T3), ("P3", T3)]}
    assert delta.scores == {
        "interests": [("shoes", 10.0), ("socks", 5.0)],
        "stores": [("S-12", 1.0)],
    }
    assert delta.min == {"first_seen": T3, "first:pos": T3}
    assert delta.max == {"last_seen": T3, "last:pos": T3}
    assert delta.sessions == [("s1", T3)]


def test_a_return_takes_revenue_and_units_back() -> None:
    refund = ev(
        "r1",
        3,
        type="track",
        name="Order Refunded",
        channel="pos",
        properties={
            "revenue": -15.0,
            "products": [{"product_id": "P1", "price": 7.5, "quantity": 2}],
        },
    )
    delta = event_delta(refund)
    assert delta.incr == {"events": 1, "units": -2}
    assert delta.fincr == {"revenue": -15.0}
    assert not delta.recent  # a return is not a purchase
    positive = ev("r2", 3, type="track", name="Order Refunded", properties={"total": 4.0})
    assert event_delta(positive).fincr == {"revenue": -4.0}  # whatever sign the till used


def test_views_carts_emails() -> None:
    view = event_delta(ev("v", 3, type="track", name="Product Viewed",
                          properties={"product_id": "P1", "category": "shoes"}))  # fmt: skip
    assert view.recent == {"viewed": [("P1", T3)]}
    assert view.scores == {"interests": [("shoes", 1.0)]}
    cart = event_delta(ev("c", 3, type="track", name="Product Added", properties={"sku": "S"}))
    assert cart.recent == {"carted": [("S", T3)]} and cart.scores == {}
    opened = event_delta(ev("m", 3, type="track", name="Email Opened", channel="email"))
    assert opened.incr == {"events": 1, "emails_opened": 1}
    clicked = event_delta(ev("k", 3, type="track", name="Email Link Clicked"))
    assert clicked.incr["emails_clicked"] == 1
    assert event_delta(ev("p", 3)).incr == {"events": 1, "page_views": 1}


def test_traits_consent_and_time_zone_carry_their_time_and_channel() -> None:
    identify = ev(
        "i1",
        3,
        type="identify",
        traits={
            "email": "Alice@Example.com",
            "consent": [
                {"channel": "email", "purpose": "marketing", "granted": True},
                {"channel": "sms", "granted": "yes"},  # not a boolean: ignored
            ],
        },
        context={"timezone": "Europe/Paris"},
    )
    latest = event_delta(identify).latest
    assert set(latest) == {"trait:email", "timezone", "consent:email:marketing"}
    assert json.loads(latest["trait:email"].raw) == {
        "v": "Alice@Example.com",
        "at": T3,
        "ch": "web",
    }
    consent = json.loads(latest["consent:email:marketing"].raw)
    assert consent["v"] is True and consent["event"] == "i1"
    update = ev("u", 3, type="track", name="Consent Updated",
                properties={"channel": "push", "purpose": "offers", "granted": False})  # fmt: skip
    assert json.loads(event_delta(update).latest["consent:push:offers"].raw)["v"] is False


def test_fold_of_a_merged_profile() -> None:
    trait = json.dumps({"v": "Bob", "at": 5, "ch": "pos"})
    snap = Snapshot(
        into="c_survivor",
        p={"events": "7", "orders": "1", "visits": "2", "revenue": "9.5",
           "first_seen": "100", "first:pos": "100", "last_seen": "900", "last:pos": "900"},
        attr={"trait:name": trait},
        bought=[("P1", 500.0)],
        stores=[("S-1", 1.0)],
        sessions=[("s1", 100.0), ("s2", 900.0)],
        done=[("e1", 1.0)],
    )  # fmt: skip
    delta = fold_delta("c_merged", snap)
    assert delta.id == "merge:c_merged"
    assert delta.incr == {"events": 7, "orders": 1} and delta.fincr == {"revenue": 9.5}
    assert delta.visits == 2 and delta.sessions == [("s1", 100), ("s2", 900)]
    assert delta.min == {"first_seen": 100, "first:pos": 100}
    assert delta.latest["trait:name"].at == 5 and delta.latest["trait:name"].raw == trait
    assert delta.recent == {"bought": [("P1", 500)]} and delta.scores == {"stores": [("S-1", 1.0)]}
    assert json.loads(encode(delta))["done"] == [["e1", 1.0]]
