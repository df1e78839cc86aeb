"""sessions: visits cut on inactivity, campaigns and local midnight; records; replays; races."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway import keys as K
from gateway.bus import Entry
from gateway.datamart.sessions import session_id_for
from tests.gateway.agents.chain import Chain, by_id, ev, flush


async def test_visits_split_on_timeout_campaign_and_midnight_in_the_site_time_zone(
    make_chain: Callable[..., Chain],
) -> None:
    # New York is UTC-5 on 2024-03-04: its midnight is 05:00 UTC
    chain = make_chain(sites__demo__timezone="America/New_York")
    summer = {"campaign": {"source": "nl", "medium": "email", "name": "summer"}}
    await chain.publish(
        [ev("a", 0), ev("b", 10)],
        [ev("c", 50)],  # 40 minutes later: timeout
        [ev("d", 51, context=summer)],  # another campaign
        [ev("e", 52)],  # no tags: still the summer visit
        [ev("f", 290), ev("g", 310)],  # 04:50 and 05:10 UTC: midnight in New York
        [ev("x", 0, anonymous_id="a2"), ev("y", 310, anonymous_id="a2")],
    )
    await chain.run("filter", "sessions")
    out = by_id(await chain.events(K.SESSIONIZED))
    sid = {k: e.session_id for k, e in out.items()}
    assert sid["a"] == sid["b"] == session_id_for("demo", "a1", "a")
    assert len({sid["b"], sid["c"], sid["d"], sid["f"], sid["g"]}) == 5
    assert sid["d"] == sid["e"]
    assert sid["x"] != sid["y"]  # another visitor, another session
    assert await flush(chain) == 2  # the open visits of a1 and a2
    records = await chain.sessions_by_id()
    ends = [records[sid[k]].end_reason for k in "bcefg"]
    assert ends == ["timeout", "campaign", "timeout", "midnight", "idle"]
    assert records[sid["d"]].events == 2 and records[sid["d"]].campaign["name"] == "summer"


async def test_referrer_classes_on_the_records(chain: Chain) -> None:
    def landing(visitor: str, referrer: str, url: str = "https://shop.example/") -> object:
        page = {"url": url, "referrer": referrer}
        return ev(f"{visitor}-1", 0, anonymous_id=visitor, context={"page": page})

    await chain.publish(
        [
            landing("v-search", "https://www.google.fr/"),
            landing("v-social", "https://l.facebook.com/l.php"),
            landing("v-mail", "https://mail.google.com/mail/u/0/"),
            landing("v-direct", ""),
            landing("v-internal", "https://shop.example/cart"),
            landing(
                "v-campaign",
                "https://www.google.fr/",
                "https://shop.example/?utm_source=g&utm_medium=cpc",
            ),
            landing("v-email", "", "https://shop.example/?utm_source=nl&utm_medium=email"),
            landing("v-other", "https://blog.example.org/"),
        ]
    )
    await chain.run("filter", "sessions")
    await flush(chain)
    classes = {r.visitor_id: r.referrer_class for r in (await chain.sessions_by_id()).values()}
    assert classes == {
        "v-search": "search",
        "v-social": "social",
        "v-mail": "email",
        "v-direct": "direct",
        "v-internal": "direct",
        "v-campaign": "campaign",
        "v-email": "email",
        "v-other": "other",
    }


async def test_bots_and_non_visits_get_no_session(chain: Chain) -> None:
    await chain.publish(
        [
            ev("bot", 0, context={"bot": True}),
            ev("mail", 0, type="track", name="Email Opened", channel="email"),
            ev("dnt", 0, anonymous_id=None, context={"dnt": True}),
            ev("user", 0, anonymous_id=None, user_id="u1"),
        ]
    )
    await chain.run("filter", "sessions")
    out = by_id(await chain.events(K.SESSIONIZED))
    assert out["bot"].session_id is None and out["bot"].context["bot"] is True
    assert out["mail"].session_id is None and out["dnt"].session_id is None
    assert out["user"].session_id == session_id_for("demo", "u1", "user")


async def test_idle_visits_close_on_the_tick_without_new_traffic(chain: Chain) -> None:
    await chain.publish([ev("e1", 0), ev("e2", 1, type="track", name="Order Completed")])
    await chain.run("filter", "sessions")
    assert await chain.handler("sessions").flush_idle() == 0  # not idle yet
    assert await chain.records() == []
    assert await flush(chain) == 1
    (record,) = await chain.records()
    assert record.end_reason == "idle" and record.converted and record.events == 2
    assert await flush(chain) == 0
    assert not await chain.client.exists(chain.keys.open_session("demo", "a1"))
    assert await chain.client.zcard(chain.keys.idle_sessions()) == 0


async def test_a_replay_gets_the_same_sessions_and_counts_nothing_twice(chain: Chain) -> None:
    await chain.publish([ev("e1", 0), ev("e2", 5)], [ev("e3", 60)], [ev("e4", 61)])
    await chain.run("filter", "sessions")
    first = [(e.event_id, e.session_id) for e in await chain.events(K.SESSIONIZED)]
    await chain.replay("sessions")
    await chain.run("sessions")
    again = [(e.event_id, e.session_id) for e in await chain.events(K.SESSIONIZED)]
    assert again == first + first  # republished (at-least-once), with the same sessions
    await flush(chain)
    records = await chain.records()
    assert sorted((r.first_event_id, r.events) for r in records) == [("e1", 2), ("e3", 2)]


async def test_members_racing_on_one_visitor_lose_no_event(
    make_chain: Callable[..., Chain],
) -> None:
    one, two = make_chain(), make_chain()  # two members of the sessions group
    rounds = 15

    async def feed(member: Chain, name: str) -> None:
        for r in range(rounds):
            entry = Entry(f"0-{r}", [ev(f"{name}{r}", r / 10)])
            await member.handler("sessions")([entry])

    await asyncio.gather(feed(one, "x"), feed(two, "y"))
    await flush(one)
    (record,) = (await one.sessions_by_id()).values()
    assert record.events == 2 * rounds
    # the members did step on each other (and recomputed)
    assert one.handler("sessions").conflicts + two.handler("sessions").conflicts > 0
