"""Which identifiers an event carries, normalized and strongest first."""

from __future__ import annotations

from gateway.datamart.identifiers import customer_id_for, identifiers_of, normalize
from tests.gateway.agents.chain import ev


def test_every_source_in_priority_order() -> None:
    event = ev(
        "e1",
        type="identify",
        user_id="u1",
        traits={"email": "  Alice@Example.COM ", "loyaltyCard": 4242, "erpPartyId": "P-7"},
        context={"device": {"token": "tok"}, "traits": {"email": "alice@example.com"}},
    )
    assert identifiers_of(event) == [
        ("user_id", "u1"),
        ("erp_party_id", "P-7"),
        ("loyalty_card", "4242"),
        ("email", "alice@example.com"),  # once, though sent twice
        ("device_token", "tok"),
        ("anonymous_id", "a1"),
    ]


def test_loyalty_card_from_properties_and_context_traits() -> None:
    sale = ev("e", type="track", name="Order Completed", properties={"loyalty_card": " L9 "})
    assert ("loyalty_card", "L9") in identifiers_of(sale)
    carried = ev("e", context={"traits": {"loyaltyCard": "L8"}})
    assert ("loyalty_card", "L8") in identifiers_of(carried)


def test_alias_previous_id() -> None:
    alias = ev("e", type="alias", anonymous_id=None, user_id="u2", previous_id="a9")
    assert identifiers_of(alias) == [("user_id", "u2"), ("previous", "a9")]
    same = ev("e", type="alias", user_id="u2", previous_id="a1")
    assert ("previous", "a1") not in identifiers_of(same)


def test_unusable_values_are_left_out() -> None:
    assert normalize("email", "not-an-email") is None
    assert normalize("email", "") is None
    assert normalize("loyalty_card", True) is None
    assert normalize("loyalty_card", {"x": 1}) is None
    assert normalize("user_id", "x" * 256) is None
    assert identifiers_of(ev("e", anonymous_id=None, context={"dnt": True})) == []


def test_customer_ids_derive_from_the_first_identifier() -> None:
    first = customer_id_for("demo", "email", "alice@example.com")
    assert first == customer_id_for("demo", "email", "alice@example.com")
    assert first.startswith("c_") and len(first) == 18
    assert first != customer_id_for("other", "email", "alice@example.com")
    assert customer_id_for("demo", "previous", "a1") == customer_id_for(
        "demo", "anonymous_id", "a1"
    )
