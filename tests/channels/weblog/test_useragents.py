"""User-agent parsing and bot detection, and IP anonymization: plain functions, no I/O."""

from __future__ import annotations

import pytest

from channels.weblog.useragents import MAX_PARSED, UserAgentParser
from gateway.privacy import anonymize_ip

AGENTS = {
    "chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "iphone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "ipad": "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "ahrefs": "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "curl": "curl/8.5.0",
    "headless": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/126.0.0.0 Safari/537.36",
}


@pytest.mark.parametrize(
    ("agent", "browser", "os", "device", "bot"),
    [
        ("chrome", "Chrome", "Windows", "desktop", False),
        ("iphone", "Mobile Safari", "iOS", "mobile", False),
        ("ipad", "Mobile Safari", "iOS", "tablet", False),
        ("googlebot", "Googlebot", "Other", "bot", True),
        ("ahrefs", "AhrefsBot", "Other", "bot", True),
        ("curl", "curl", "Other", "bot", True),
        ("headless", "HeadlessChrome", "Linux", "bot", True),
    ],
)
def test_parse_and_classify(agent: str, browser: str, os: str, device: str, bot: bool) -> None:
    parsed = UserAgentParser().parse(AGENTS[agent])
    assert (parsed.browser, parsed.os, parsed.device_type, parsed.is_bot) == (
        browser,
        os,
        device,
        bot,
    )


def test_no_user_agent_is_a_bot() -> None:
    parser = UserAgentParser()
    assert parser.is_bot("") and parser.is_bot("-")


def test_parses_are_cached() -> None:
    parser = UserAgentParser(cache_size=2)
    for _ in range(3):
        parser.parse(AGENTS["chrome"])
    info = parser._cached.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (2, 1, 2)


def test_only_the_first_characters_of_a_long_user_agent_are_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CrawlerDetect's regex is quadratic in a run of letters: 30,000 of them held the event
    loop for 46 s (a write key's request could do that to the gateway)."""
    parser = UserAgentParser()
    seen: list[int] = []
    is_crawler = parser._crawlers.isCrawler
    monkeypatch.setattr(
        parser._crawlers, "isCrawler", lambda ua: seen.append(len(ua)) or is_crawler(ua)
    )
    padded = parser.parse(AGENTS["chrome"] + " " + "A" * 30_000)
    assert seen == [MAX_PARSED]
    assert (padded.browser, padded.os, padded.device_type) == ("Chrome", "Windows", "desktop")
    same_start = AGENTS["chrome"] + " " + "A" * 1000 + "B" * 30_000
    assert parser.parse(same_start) is padded  # one cache entry for both


@pytest.mark.parametrize(
    ("ip", "anonymized"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:85a3:1234:5678:8a2e:370:7334", "2001:db8:85a3::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        (" 10.0.0.1 ", "10.0.0.0"),
        ("not-an-ip", ""),
        ("", ""),
    ],
)
def test_anonymize_ip(ip: str, anonymized: str) -> None:
    assert anonymize_ip(ip) == anonymized
