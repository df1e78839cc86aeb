"""Cube queries: checked names, SQL that runs on both engines, and figures equal to those
computed by hand from the same generated shop."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import pytest

from gateway.errors import OlapError
from gateway.warehouse import Warehouse
from gateway.warehouse.olap import (
    DIMENSIONS,
    FACTS,
    MEASURES,
    Result,
    compile,
    parse_query,
    run,
)
from tests.gateway.warehouse import data
from tests.gateway.warehouse.data import Shop, count, day, distinct, humans, share, total, visitor

# --- names and SQL, no database ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"measures": "events,pageviews"}, "measures", "unknown measure 'pageviews'"),
        ({"measures": ""}, "measures", "no measure given"),
        ({"measures": "events", "dims": "day,colour"}, "dims", "unknown dimension 'colour'"),
        (
            {"measures": "events", "filters": ["colour=red"]},
            "filters",
            "unknown filter dim.*colour",
        ),
        ({"measures": "events", "filters": ["channel"]}, "filters", "not dimension=value"),
        ({"measures": "events", "filters": ["channel="]}, "filters", "has no value"),
        ({"measures": "events", "filters": ["day=monday"]}, "filters", "filter 'day'"),
        ({"measures": "events", "filters": ["week=2026-2"]}, "filters", "YYYY-Www"),
        ({"measures": "events", "filters": ["week=2026-W99"]}, "filters", "does not exist"),
        ({"measures": "events", "filters": ["week=2025-W53"]}, "filters", "does not exist"),
        ({"measures": "events", "filters": ["month=2026-13"]}, "filters", "does not exist"),
        ({"measures": "events", "filters": ["month=2026-00"]}, "filters", "does not exist"),
        ({"measures": "events", "filters": ["hour=0001-01-01T00:00+01:00"]}, "filters", "UTC"),
        ({"measures": "events", "start": "2026-13-01"}, "from", "not an ISO date"),
    ],
)
def test_bad_queries_name_what_is_wrong(kwargs: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(OlapError, match=message) as caught:
        parse_query(**kwargs)
    assert caught.value.field == field
    assert caught.value.as_json()["field"] == field


def test_a_dimension_a_fact_lacks_names_both() -> None:
    with pytest.raises(OlapError, match="dimension 'store' does not apply to measure 'sessions'"):
        compile(parse_query("events,sessions", "store"))
    with pytest.raises(OlapError, match="'device_type' does not apply to measure 'revenue'"):
        compile(parse_query("revenue", filters=["device_type=mobile"]))
    with pytest.raises(OlapError, match="must be before"):
        compile(parse_query("events", start="2026-02-01", end="2026-01-01"))


def test_every_measure_and_fact_is_wired() -> None:
    assert {m.fact for m in MEASURES.values()} == set(FACTS)
    for fact in FACTS.values():
        assert set(fact.dims) <= set(DIMENSIONS)
    statements = compile(parse_query(list(MEASURES), "day,channel,segment", ["channel=web"]))
    assert [s.fact for s in statements] == [f.table for f in FACTS.values()]  # one per fact
    assert all(s.params == ["web"] for s in statements)


def test_filters_become_parameters_never_sql() -> None:
    [statement] = compile(
        parse_query("events", "channel", ["channel=web,x' OR 1=1) --"], "2026-01-01")
    )
    assert "DROP" not in statement.sql
    assert statement.params == [20260101, "web", "x' OR 1=1) --"]


def test_results_render_as_json_csv_and_a_table() -> None:
    result = Result(
        ["day", "events", "revenue", "bounce_rate"],
        [["2026-01-05", 1200, 1234.5, 0.25], ["2026-01-06", 3, -2.0, None]],
        ["dimension", "count", "sum", "ratio"],
    )
    assert result.as_json()["rows"][1] == ["2026-01-06", 3, -2.0, None]
    assert result.as_csv().splitlines() == [
        "day,events,revenue,bounce_rate",
        "2026-01-05,1200,1234.5,0.25",
        "2026-01-06,3,-2.0,",
    ]
    assert result.as_table().splitlines() == [
        "day         events   revenue  bounce_rate",
        "----------  ------  --------  -----------",
        "2026-01-05   1,200  1,234.50       0.2500",
        "2026-01-06       3     -2.00",
    ]


# --- figures, on both engines --------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop() -> Shop:
    return data.generate()


@pytest.fixture
async def loaded(warehouse: Warehouse, shop: Shop) -> Warehouse:
    await shop.load(warehouse)
    return warehouse


def as_map(result: Result, dims: int) -> dict[tuple[Any, ...], list[Any]]:
    keys = [tuple(row[:dims]) for row in result.rows]
    assert len(set(keys)) == len(keys), "one row per combination of dimension values"
    return {tuple(row[:dims]): row[dims:] for row in result.rows}


def assert_close(got: Mapping[Any, list[Any]], expected: Mapping[Any, list[Any]]) -> None:
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        assert got[key] == pytest.approx(values), key


def expect(*measures: Mapping[Any, Any], empty: tuple[Any, ...] | None = None) -> dict[Any, Any]:
    """Figures per key (a dim value or a tuple of them) → rows keyed like :func:`as_map`."""
    keys: set[Hashable] = set().union(*measures)
    fill = empty or (0,) * len(measures)
    out = {}
    for key in keys:
        values = [m.get(key, fill[i]) for i, m in enumerate(measures)]
        out[key if isinstance(key, tuple) else (key,)] = values
    return out


async def query(warehouse: Warehouse, measures: str, dims: str = "", **kw: Any) -> Result:
    return await run(warehouse, parse_query(measures, dims, **kw))


async def test_events_by_day_and_channel_leave_bots_out(loaded: Warehouse, shop: Shop) -> None:
    result = await query(loaded, "events", "day,channel")
    assert result.columns == ["day", "channel", "events"]
    assert as_map(result, 2) == expect(count(humans(shop), lambda e: (day(e["ts"]), e["channel"])))
    assert result.rows == sorted(result.rows)


async def test_visitors_are_distinct_people(loaded: Warehouse, shop: Shop) -> None:
    result = await query(loaded, "visitors,events", "channel")
    by_channel = lambda e: e["channel"]  # noqa: E731
    assert as_map(result, 1) == expect(
        distinct(humans(shop), by_channel, visitor), count(humans(shop), by_channel)
    )


async def test_measures_of_several_facts_meet_on_their_dimensions(
    loaded: Warehouse, shop: Shop
) -> None:
    result = await query(loaded, "events,revenue,sessions,messages_sent", "day")
    assert result.columns == ["day", "events", "revenue", "sessions", "messages_sent"]
    sent = [m for m in shop.messages if m["status"] == "sent"]
    expected = expect(
        count(humans(shop), lambda e: day(e["ts"])),
        total(shop.sales, lambda s: day(s["ts"]), lambda s: data.signed(s, "revenue")),
        count(shop.sessions, lambda s: day(s["started_at"])),
        count(sent, lambda m: day(m["ts"])),
    )
    assert_close(as_map(result, 1), expected)


async def test_sales_with_returns_by_category(loaded: Warehouse, shop: Shop) -> None:
    result = await query(loaded, "orders,revenue,units", "category", filters=["channel=web,pos"])
    sales = [s for s in shop.sales if s["channel"] in ("web", "pos")]
    by_category = lambda s: s["category"]  # noqa: E731
    orders = distinct(
        [s for s in sales if s["kind"] == "sale"], by_category, lambda s: s["order_id"]
    )
    expected = expect(
        orders,
        total(sales, by_category, lambda s: data.signed(s, "revenue")),
        total(sales, by_category, lambda s: data.signed(s, "quantity")),
    )
    assert any(s["kind"] == "return" for s in sales)
    assert_close(as_map(result, 1), expected)


async def test_session_rates_by_device(loaded: Warehouse, shop: Shop) -> None:
    result = await query(loaded, "sessions,bounce_rate,conversion_rate", "device_type")
    by_device = lambda s: s["device_type"]  # noqa: E731
    expected = expect(
        count(shop.sessions, by_device),
        share(shop.sessions, by_device, "bounced"),
        share(shop.sessions, by_device, "converted"),
    )
    assert_close(as_map(result, 1), expected)
    assert result.rows[-1][0] is None  # no device: last


async def test_message_outcomes_by_campaign(loaded: Warehouse, shop: Shop) -> None:
    statuses = ("sent", "delivered", "opened", "clicked", "unsubscribed", "bounced")
    measures = ",".join(f"messages_{s}" for s in statuses)
    result = await query(loaded, measures, "campaign")
    expected = expect(
        *(
            count([m for m in shop.messages if m["status"] == s], lambda m: m["campaign_id"])
            for s in statuses
        )
    )
    assert as_map(result, 1) == expected


async def test_segments_as_a_dimension_and_as_a_filter(loaded: Warehouse, shop: Shop) -> None:
    per_segment: dict[Any, int] = {}
    for e in humans(shop):
        for segment in shop.segments_of(e["customer_id"]) or [None]:
            per_segment[segment] = per_segment.get(segment, 0) + 1
    assert as_map(await query(loaded, "events", "segment"), 1) == expect(per_segment)

    vip = [e for e in humans(shop) if "vip" in shop.segments_of(e["customer_id"])]
    result = await query(loaded, "events", "channel", filters=["segment=vip"])
    assert as_map(result, 1) == expect(count(vip, lambda e: e["channel"]))


async def test_calendar_dimensions_and_period(loaded: Warehouse, shop: Shop) -> None:
    weeks = await query(loaded, "events", "week")
    assert as_map(weeks, 1) == expect(count(humans(shop), lambda e: data.week(e["ts"])))
    assert [row[0] for row in weeks.rows] == ["2026-W01", "2026-W02"]

    months = await query(loaded, "events,orders", "month")
    assert months.rows == [
        [
            "2026-01",
            len(humans(shop)),
            len({s["order_id"] for s in shop.sales if s["kind"] == "sale"}),
        ]
    ]

    hours = await query(loaded, "events", "hour", filters=["day=2026-01-05"])
    on_day = [e for e in humans(shop) if day(e["ts"]) == "2026-01-05"]
    assert as_map(hours, 1) == expect(count(on_day, lambda e: e["ts"].strftime("%Y-%m-%dT%H:00")))

    period = await query(loaded, "events,sessions", "day", start="2026-01-04", end="2026-01-06")
    assert [row[0] for row in period.rows] == ["2026-01-04", "2026-01-05"]
    assert sum(row[1] for row in period.rows) == sum(
        1 for e in humans(shop) if "2026-01-04" <= day(e["ts"]) < "2026-01-06"
    )


async def test_store_and_product_of_till_events(loaded: Warehouse, shop: Shop) -> None:
    result = await query(loaded, "events", "store,product", filters=["channel=pos", "site=shop"])
    kept = [e for e in humans(shop) if e["channel"] == "pos" and e["site"] == "shop"]
    assert as_map(result, 2) == expect(count(kept, lambda e: (e["store_id"], e["sku"])))


async def test_totals_without_dimensions(loaded: Warehouse, shop: Shop) -> None:
    result = await query(loaded, "events,revenue,sessions,bounce_rate")
    revenue = sum(data.signed(s, "revenue") for s in shop.sales)
    bounced = sum(s["bounced"] for s in shop.sessions) / len(shop.sessions)
    assert result.rows == [
        [len(humans(shop)), pytest.approx(revenue), len(shop.sessions), pytest.approx(bounced)]
    ]


async def test_an_empty_warehouse_answers_zero_and_null(warehouse: Warehouse) -> None:
    result = await query(warehouse, "events,revenue,bounce_rate")
    assert result.rows == [[0, 0.0, None]]
    assert (await query(warehouse, "events", "day")).rows == []


async def test_too_many_rows_are_refused(loaded: Warehouse) -> None:
    with pytest.raises(OlapError, match="more than 10 rows"):
        await run(loaded, parse_query("events", "hour"), max_rows=10)
