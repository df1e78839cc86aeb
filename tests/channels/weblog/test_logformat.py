"""Access-log formats without I/O: every known format, detection, custom LogFormat strings,
bad lines, timestamps, and hits turned into page events."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from channels.weblog.logformat import (
    FORMATS,
    Hit,
    LogFormat,
    LogFormatError,
    PageViews,
    compile_format,
    detect,
    parse_time,
    visitor_id,
)
from channels.weblog.useragents import UserAgentParser

FIXTURES = Path(__file__).parent / "fixtures"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
CUSTOM = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" "%{Cookie}i" %D'


def first_line(name: str) -> str:
    return (FIXTURES / name).read_text().splitlines(keepends=True)[0]


def hit(**fields: object) -> Hit:
    values: dict[str, object] = {
        "host": "192.0.2.1", "time": datetime(2024, 1, 1, tzinfo=UTC), "method": "GET",
        "path": "/", "query": "", "protocol": "HTTP/1.1", "status": 200, "bytes": 10,
        "referrer": "", "user_agent": CHROME, "vhost": "", "port": 0, "request_time": None,
        "cookie": None,
    }  # fmt: skip
    values.update(fields)
    return Hit(**values)  # type: ignore[arg-type]


EXPECTED = {
    "combined.log": hit(
        host="192.0.2.10",
        time=datetime(2023, 10, 10, 11, 55, 36, tzinfo=UTC),
        path="/products/42",
        query="?color=red&size=40",
        bytes=5120,
        referrer="https://www.google.com/",
    ),
    "common.log": hit(
        host="192.0.2.20",
        time=datetime(2024, 1, 1, 5, 0, 1, tzinfo=UTC),
        path="/about",
        query="?ref=nav",
        protocol="HTTP/1.0",
        bytes=2326,
        user_agent="",
    ),
    "vhost_combined.log": hit(
        host="192.0.2.30",
        time=datetime(2024, 3, 15, 8, 0, 0, tzinfo=UTC),
        path="/category/shoes",
        query="?page=2",
        bytes=15320,
        referrer="https://shop.example/",
        vhost="shop.example",
        port=443,
    ),
    "vhost_common.log": hit(
        host="192.0.2.40",
        time=datetime(2024, 2, 29, 22, 59, 59, tzinfo=UTC),
        path="/products/7",
        bytes=3000,
        user_agent="",
        vhost="shop.example",
    ),
    "nginx_request_time.log": hit(
        host="192.0.2.50",
        time=datetime(2024, 6, 5, 4, 30, 0, tzinfo=UTC),
        path="/search",
        query="?q=red+shoes",
        protocol="HTTP/2.0",
        bytes=812,
        referrer="https://shop.example/",
        user_agent=SAFARI,
        request_time=0.123,
    ),
}


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_every_known_format_parses_all_fields(fixture: str) -> None:
    name = fixture.removesuffix(".log")
    assert compile_format(name).parse(first_line(fixture)) == EXPECTED[fixture]


@pytest.mark.parametrize(
    "fixture", [*sorted(EXPECTED), "custom.log"], ids=lambda f: f.removesuffix(".log")
)
def test_detection_picks_the_format_of_each_fixture(fixture: str) -> None:
    found = detect((FIXTURES / fixture).read_text().splitlines(keepends=True))
    if fixture == "custom.log":
        assert found is None  # a format of its own: --log-format is needed
    else:
        assert found is not None and found.name == fixture.removesuffix(".log")


def test_detection_prefers_the_format_most_lines_fit() -> None:
    common = first_line("common.log")
    combined = first_line("combined.log")
    found = detect([common, combined, combined, "garbage\n"])
    assert found is not None and found.name == "combined"


def test_custom_format_with_cookie_header_and_microseconds() -> None:
    fmt = compile_format(CUSTOM, cookie="tp_aid")
    assert fmt.name == "custom"
    parsed = fmt.parse(first_line("custom.log"))
    assert parsed is not None
    assert parsed.cookie == "a-42f1"
    assert parsed.request_time == pytest.approx(0.012345)
    assert parsed.time == datetime(2024, 8, 21, 0, 30, 0, tzinfo=UTC)
    second = fmt.parse((FIXTURES / "custom.log").read_text().splitlines()[1])
    assert second is not None and second.cookie is None  # "-": no cookie header
    by_name = LogFormat("%h %t %r %{tp_aid}C", cookie="tp_aid")
    no_cookie = by_name.parse("192.0.2.1 [01/Feb/2024:10:00:00 +0000] GET / HTTP/1.1 -")
    assert no_cookie is not None and no_cookie.cookie is None


@pytest.mark.parametrize(
    ("spec", "line", "expected"),
    [
        (  # a cookie by name, %a, %B, request time in milliseconds, %U%q, %m, %H
            '%a %t %m %U%q %H %>s %B "%{User-Agent}i" %{tp_aid}C %{ms}T',
            '2001:db8::7 [01/Feb/2024:10:00:00 +0000] POST /cart?x=1 HTTP/1.1 201 5 "curl/8" '
            "c-9 250",
            {"host": "2001:db8::7", "method": "POST", "path": "/cart", "query": "?x=1",
             "status": 201, "bytes": 5, "cookie": "c-9", "request_time": 0.25},
        ),
        (  # %v %p, %O when there is no %b, %T in whole seconds, notes and other headers ignored
            '%v %p %h "%r" %t %s %O %T %{note}n "%{X-Forwarded-For}i" %%',
            'shop.example 8443 192.0.2.9 "GET /a HTTP/1.1" [01/Feb/2024:10:00:00 +0000] 200 '
            '999 2 n1 "198.51.100.1, 10.0.0.1" %',
            {"vhost": "shop.example", "port": 8443, "bytes": 999, "request_time": 2.0,
             "path": "/a"},
        ),
        (  # literal text between directives, a quoted request with an escaped quote
            'client=%h time=%t req="%r" status=%>s size=%b',
            'client=192.0.2.8 time=[01/Feb/2024:10:00:00 +0000] req="GET /q\\"x HTTP/1.1" '
            "status=400 size=-",
            {"path": "", "status": 400, "bytes": 0},
        ),
    ],
)  # fmt: skip
def test_custom_log_format_strings(spec: str, line: str, expected: dict[str, object]) -> None:
    parsed = LogFormat(spec, cookie="tp_aid").parse(line)
    assert parsed is not None
    assert {k: getattr(parsed, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("%h %Z", "%Z is not supported"),
        ('%h "%r" %>s', "has no %t"),
        ("%h %t %>s", "neither %r nor %U"),
        ("%h %t %r %{fortnights}T", "unknown time unit"),
        ("%h %{%Y-%m-%d}t %r", "only the default %t"),
    ],
)
def test_unusable_log_format_strings_are_refused(spec: str, message: str) -> None:
    with pytest.raises(LogFormatError, match=message):
        LogFormat(spec)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "this is not an access log line",
        '192.0.2.11 - - [10/Oct/2023:13:55:41 +0200] "GET /trunc',  # truncated
        '192.0.2.11 - - [10/Oct/2023:13:55:41 +0200] "GET / HTTP/1.1" 200',  # truncated
        '192.0.2.13 - - [32/Foo/2023:13:55:45 +0200] "GET / HTTP/1.1" 200 1 "-" "-"',
        '192.0.2.13 - - [10/Oct/2023:13:55:45] "GET / HTTP/1.1" 200 1 "-" "-"',
        '192.0.2.13 - - [10/Oct/2023:13:55:45 +0200] "GET / HTTP/1.1" 200 1 "-" "-" extra',
        '192.0.2.13 - - [10/Oct/2023:13:55:45 +0200] "GET / HTTP/1.1" abc 1 "-" "-"',
        # numbers no server writes: once an OverflowError (2^64 and more, the bus's msgpack)
        # or a ValueError (over 4,300 digits) that stopped the import half way
        f'192.0.2.13 - - [10/Oct/2023:13:55:45 +0200] "GET / HTTP/1.1" 200 {10**30} "-" "-"',
        f'192.0.2.13 - - [10/Oct/2023:13:55:45 +0200] "GET / HTTP/1.1" 200 {"9" * 5000} "-" "-"',
        '192.0.2.13 - - [31/Dec/9999:23:59:59 -1200] "GET / HTTP/1.1" 200 1 "-" "-"',
        '192.0.2.13 - - [01/Jan/0001:00:00:00 +1400] "GET / HTTP/1.1" 200 1 "-" "-"',
        '192.0.2.13 - - [10/Oct/2023:13:55:45 +0200] "GET / HTTP/1.1" 200 ٣ "-" "-"',
    ],
)
def test_malformed_and_truncated_lines_are_none(line: str) -> None:
    assert compile_format("combined").parse(line) is None


def test_a_request_that_is_not_one_still_fits_with_empty_fields() -> None:
    parsed = compile_format("combined").parse(
        '192.0.2.12 - - [10/Oct/2023:13:55:43 +0200] "-" 408 - "-" "-"\r\n'
    )
    assert parsed is not None
    assert (parsed.method, parsed.path, parsed.query, parsed.status, parsed.bytes) == (
        "", "", "", 408, 0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("10/Oct/2000:13:55:36 -0700", datetime(2000, 10, 10, 20, 55, 36, tzinfo=UTC)),
        ("10/Oct/2000:13:55:36 +0000", datetime(2000, 10, 10, 13, 55, 36, tzinfo=UTC)),
        ("01/Jan/2024:01:30:00 +0530", datetime(2023, 12, 31, 20, 0, 0, tzinfo=UTC)),
        ("31/Dec/2023:23:30:00 -0945", datetime(2024, 1, 1, 9, 15, 0, tzinfo=UTC)),
        ("29/Feb/2024:12:00:00 +1400", datetime(2024, 2, 28, 22, 0, 0, tzinfo=UTC)),
    ],
)
def test_timestamps_with_offsets_become_utc(stamp: str, utc: datetime) -> None:
    assert parse_time(stamp) == utc


@pytest.mark.parametrize(
    "stamp",
    ["", "10/Oct/2000:13:55:36", "30/Feb/2024:00:00:00 +0000", "10/Okt/2000:13:55:36 +0000",
     "10/Oct/2000:25:00:00 +0000", "10/Oct/2000 13:55:36 +0000",
     "10/Oct/2000:13:55:36 +2400", "10/Oct/2000:13:55:36 +0199",  # no such offsets
     "10/Oct/٢٠٠٠:13:55:36 +0000"],  # digits, not ASCII ones
)  # fmt: skip
def test_bad_timestamps_are_none(stamp: str) -> None:
    assert parse_time(stamp) is None


def test_known_formats_are_tried_most_specific_first() -> None:
    assert list(FORMATS)[:2] == ["vhost_combined", "nginx_request_time"]
    assert list(FORMATS)[-1] == "common"


# --- hits → page events --------------------------------------------------------------------


@pytest.fixture(scope="module")
def agents() -> UserAgentParser:
    return UserAgentParser()


def views(agents: UserAgentParser) -> PageViews:
    return PageViews("shop", key=b"k" * 32, agents=agents)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, None),
        ({"status": 304}, None),
        ({"status": 404}, "error"),
        ({"status": 503}, "error"),
        ({"path": "", "status": 200}, "no_request"),
        ({"path": "/static/app.CSS"}, "static"),
        ({"path": "/v1.2/products"}, None),  # a dot in a folder is no extension
        ({"user_agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}, "bot"),
        ({"user_agent": "-"}, "bot"),  # nobody browses without a user agent
        ({"user_agent": ""}, None),  # the format logs none: not known
    ],
)
def test_skip_reasons(agents: UserAgentParser, fields: dict[str, object], reason: str) -> None:
    assert views(agents).skip_reason(hit(**fields)) == reason


def test_keep_flags_keep_what_they_say(agents: UserAgentParser) -> None:
    keep = PageViews(
        "shop", key=b"k", agents=agents, keep_static=True, keep_bots=True, keep_errors=True
    )
    for fields in ({"status": 500}, {"path": "/a.js"}, {"user_agent": "curl/8"}):
        assert keep.skip_reason(hit(**fields)) is None
    assert keep.skip_reason(hit(path="")) == "no_request"  # nothing to make a page of


def test_page_event_fields(agents: UserAgentParser) -> None:
    received = datetime(2024, 5, 1, tzinfo=UTC)
    maker = PageViews("shop", key=b"k" * 32, agents=agents, received_at=received)
    source = hit(
        vhost="shop.example", port=443, path="/p", query="?a=1", referrer="https://r.example/",
        request_time=0.5, host="198.51.100.23",
    )  # fmt: skip
    event = maker.event(source, "e" * 32)
    assert (event.event_id, event.type, event.site) == ("e" * 32, "page", "shop")
    assert event.channel == "web"
    assert (event.timestamp, event.received_at) == (source.time, received)
    assert event.anonymous_id == visitor_id(b"k" * 32, "198.51.100.23", CHROME)
    assert event.properties == {
        "path": "/p", "url": "https://shop.example/p?a=1", "search": "?a=1",
        "referrer": "https://r.example/", "method": "GET", "status": 200, "bytes": 10,
        "request_time": 0.5,
    }  # fmt: skip
    assert event.context["ip"] == "198.51.100.0"
    assert event.context["userAgent"] == CHROME
    assert event.context["userAgentData"]["browser"] == "Chrome"
    assert event.context["page"] == {
        "path": "/p", "url": "https://shop.example/p?a=1", "search": "?a=1",
        "referrer": "https://r.example/",
    }  # fmt: skip
    assert event.context["source"] == "access-log"
    assert "bot" not in event.context


@pytest.mark.parametrize(
    ("vhost", "port", "url"),
    [("", 0, "/p?a=1"), ("shop.example", 80, "http://shop.example/p?a=1"),
     ("shop.example", 8080, "http://shop.example:8080/p?a=1"),
     ("shop.example", 0, "http://shop.example/p?a=1")],
)  # fmt: skip
def test_url_has_the_virtual_host_when_the_log_has_one(
    agents: UserAgentParser, vhost: str, port: int, url: str
) -> None:
    event = views(agents).event(hit(vhost=vhost, port=port, path="/p", query="?a=1"), "e")
    assert event.properties["url"] == event.context["page"]["url"] == url


def test_cookie_wins_over_the_derived_visitor_and_raw_ip_when_asked(
    agents: UserAgentParser,
) -> None:
    maker = PageViews("shop", key=b"k", agents=agents, anonymize=False, keep_bots=True)
    event = maker.event(hit(cookie="a-1", user_agent="curl/8", host="192.0.2.99"), "e")
    assert event.anonymous_id == "a-1"
    assert event.context["ip"] == "192.0.2.99"
    assert event.context["bot"] is True


def test_visitor_ids_are_stable_per_salt_ip_and_agent() -> None:
    one = visitor_id(b"salt", "192.0.2.1", CHROME)
    assert one == visitor_id(b"salt", "192.0.2.1", CHROME)
    assert one.startswith("v-") and len(one) == 26
    assert one != visitor_id(b"salt", "192.0.2.1", SAFARI)
    assert one != visitor_id(b"salt", "192.0.2.2", CHROME)
    assert one != visitor_id(b"pepper", "192.0.2.1", CHROME)
