"""Where a visit ends and what its record says: the rules, without Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway import config as configuration
from gateway.datamart.records import OpenSession, SessionRecord
from gateway.datamart.sessions import (
    Rules,
    advance,
    campaign_of,
    next_midnight,
    pack_records,
    session_id_for,
    unpack_records,
)
from gateway.errors import ConfigError
from tests.gateway.agents.chain import DAY, ev

RULES = Rules(timeout_ms=30 * 60_000)
NOW = 1


def run(events: list, rules: Rules = RULES) -> tuple[list[str], list[SessionRecord], OpenSession]:
    """Feed events in order: (session id per event, records of ended sessions, open session)."""
    state, ids, records = None, [], []
    for event in events:
        state, ended = advance(state, event, rules, NOW)
        ids.append(state.session_id)
        if ended:
            records.append(ended)
    assert state is not None
    return ids, records, state


def test_one_visit_while_events_keep_coming() -> None:
    ids, records, state = run([ev("e1", 0), ev("e2", 20), ev("e3", 45), ev("e4", 70)])
    assert len(set(ids)) == 1 and records == []
    assert state.events == 4 and state.pages == 4


def test_inactivity_ends_a_visit() -> None:
    ids, records, _ = run([ev("e1", 0), ev("e2", 10), ev("e3", 41), ev("e4", 42)])
    assert ids[0] == ids[1] != ids[2] == ids[3]
    (first,) = records
    assert first.end_reason == "timeout"
    assert first.events == 2 and first.duration == 600.0
    assert first.started_at == DAY and first.ended_at == DAY + timedelta(minutes=10)


def test_exactly_the_timeout_still_joins() -> None:
    ids, _, _ = run([ev("e1", 0), ev("e2", 30)])
    assert ids[0] == ids[1]


def test_a_new_campaign_starts_a_new_visit_but_its_absence_does_not() -> None:
    spring = {"campaign": {"source": "newsletter", "medium": "email", "name": "spring"}}
    summer = {"campaign": {"source": "newsletter", "medium": "email", "name": "summer"}}
    ids, records, state = run(
        [
            ev("e1", 0, context=spring),
            ev("e2", 1),  # the next page has no utm tags: same visit
            ev("e3", 2, context=spring),  # the same campaign again: same visit
            ev("e4", 3, context=summer),
        ]
    )
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert records[0].end_reason == "campaign"
    assert records[0].campaign == {"source": "newsletter", "medium": "email", "name": "spring"}
    assert records[0].referrer_class == "email"
    assert state.campaign["name"] == "summer"


def test_a_campaign_arriving_mid_visit_starts_a_new_one() -> None:
    ids, records, _ = run(
        [ev("e1", 0), ev("e2", 1, properties={"url": "https://shop.example/?utm_source=fb"})]
    )
    assert ids[0] != ids[1] and records[0].end_reason == "campaign"


def test_midnight_in_the_site_time_zone() -> None:
    paris = Rules(timeout_ms=30 * 60_000, tz=ZoneInfo("Europe/Paris"))
    # 22:50 and 23:10 UTC are 23:50 and 00:10 in Paris (CET, UTC+1): two visits there...
    late = [ev("e1", -70), ev("e2", -50)]
    ids, records, _ = run(late, paris)
    assert ids[0] != ids[1] and records[0].end_reason == "midnight"
    # ...and one in UTC, where midnight was earlier
    ids, records, _ = run(late, RULES)
    assert ids[0] == ids[1] and records == []


def test_next_midnight_follows_daylight_saving() -> None:
    tz = ZoneInfo("America/New_York")
    # 2024-03-10 is the spring-forward day: that local day has 23 hours
    start = int(datetime(2024, 3, 10, 5, 0, tzinfo=UTC).timestamp() * 1000)  # 00:00 EST
    end = next_midnight(start, tz)
    assert end - start == 23 * 3_600_000


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/St_Johns", "Europe/Paris", "UTC"])
def test_next_midnight_right_before_and_after_one(zone: str) -> None:
    tz = ZoneInfo(zone)
    midnight = int(datetime(2024, 6, 2, tzinfo=tz).timestamp() * 1000)
    for offset in (-3_600_001, -900_001, -900_000, -1, 0, 1, 899_999, 900_000):
        expected = midnight if offset < 0 else midnight + 86_400_000
        assert next_midnight(midnight + offset, tz) == expected, offset


def test_a_late_event_joins_the_open_visit() -> None:
    ids, records, state = run([ev("e1", 10), ev("e2", 12), ev("e0", 5)])
    assert len(set(ids)) == 1 and records == []
    assert state.started == int((DAY + timedelta(minutes=5)).timestamp() * 1000)
    assert state.last_event_id == "e2"


def test_the_record_describes_the_visit() -> None:
    ua = {"deviceType": "mobile", "browser": "Mobile Safari", "os": "iOS", "bot": False}
    page = {"url": "https://shop.example/p/1", "referrer": "https://www.google.com/"}
    events = [
        ev("e1", 0, context={"page": page, "userAgentData": ua}),
        ev("e2", 2, type="track", name="Product Added", properties={"sku": "S1"}),
        ev("e3", 5, type="track", name="Order Completed", properties={"total": "42.50"}),
        ev("e9", 50),
    ]
    _, (record,), _ = run(events)
    assert record.landing_page == "https://shop.example/p/1"
    assert record.referrer_class == "search"
    assert (record.device_type, record.browser, record.os) == ("mobile", "Mobile Safari", "iOS")
    assert record.pages == 1 and record.events == 3
    assert record.converted and record.orders == 1 and record.revenue == 42.5
    assert not record.bounced
    assert record.first_event_id == "e1" and record.last_event_id == "e3"


def test_bounce_is_one_page_view_and_nothing_else() -> None:
    _, (one, two), _ = run([ev("e1", 0), ev("e2", 40), ev("e3", 41), ev("e4", 90)])
    assert one.bounced and not two.bounced


def test_session_ids_are_deterministic() -> None:
    ids, _, _ = run([ev("e1", 0)])
    assert ids[0] == session_id_for("demo", "a1", "e1")
    assert session_id_for("demo", "a1", "e1") != session_id_for("demo", "a2", "e1")


def test_campaign_from_the_page_url_or_the_context() -> None:
    url = "https://shop.example/?utm_source=fb&utm_medium=social&utm_campaign=x&other=1"
    assert campaign_of(ev("e", properties={"url": url})) == {
        "source": "fb", "medium": "social", "name": "x",
    }  # fmt: skip
    assert campaign_of(ev("e", properties={"search": "?utm_source=nl"})) == {"source": "nl"}
    assert campaign_of(ev("e", context={"campaign": {"source": "a", "bogus": "b"}})) == {
        "source": "a"
    }
    assert campaign_of(ev("e")) == {}


def test_campaign_from_the_url_the_page_falls_back_to() -> None:
    """A blank ``context.page.url`` is not the page's URL: the tags of the next one count."""
    tagged = {"url": "https://shop.example/?utm_source=nl"}
    assert campaign_of(ev("e", context={"page": {"url": "  "}}, properties=tagged)) == {
        "source": "nl"
    }
    assert campaign_of(ev("e", context={"page": {"url": ""}}, properties=tagged)) == {
        "source": "nl"
    }
    assert campaign_of(ev("e", context={"page": {"url": 7}}, properties=tagged)) == {"source": "nl"}
    assert campaign_of(ev("e", context={"page": {"url": "/p/1"}}, properties=tagged)) == {}


def test_records_pack_and_unpack() -> None:
    _, records, _ = run([ev("e1", 0), ev("e2", 40)])
    assert unpack_records(pack_records(records)) == records


def test_a_site_time_zone_must_exist() -> None:
    site = '[sites.demo]\nwrite_key = "demo-write-key"\n'
    assert configuration.loads(site, env={}).sites["demo"].timezone == "UTC"
    paris = configuration.loads(site + 'timezone = "Europe/Paris"', env={})
    assert paris.sites["demo"].timezone == "Europe/Paris"
    with pytest.raises(ConfigError, match=r"sites\.demo: timezone: unknown time zone 'Mars/Base'"):
        configuration.loads(site + 'timezone = "Mars/Base"', env={})
