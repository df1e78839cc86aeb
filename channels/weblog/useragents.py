"""User agents: parsed with ``user-agents`` behind an LRU cache; bots recognized by
CrawlerDetect's regularly updated crawler list (plus the parser's own spider flag).

Plain functions over strings, no I/O. An uncached parse costs ~0.5 ms; a site sees few
distinct user agents, so the cache takes nearly every lookup.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import user_agents
from crawlerdetect import CrawlerDetect

#: Characters of a user agent parsed at most. Browsers' stay well under it (in-app ones, the
#: longest, ~250); CrawlerDetect's regex is quadratic in runs of letters and digits, so a
#: user agent of 30,000 "A" held the event loop for 46 s, and 512 of them take ~30 ms.
MAX_PARSED = 512


@dataclass(frozen=True, slots=True)
class UserAgent:
    browser: str
    browser_version: str
    os: str
    os_version: str
    #: ``desktop``, ``mobile``, ``tablet``, ``bot`` or ``other``.
    device_type: str
    device_brand: str
    device_model: str
    is_bot: bool

    def as_context(self) -> dict[str, str | bool]:
        """The parse as it goes under an event's ``context.userAgentData``."""
        return {
            "browser": self.browser,
            "browserVersion": self.browser_version,
            "os": self.os,
            "osVersion": self.os_version,
            "deviceType": self.device_type,
            "deviceBrand": self.device_brand,
            "deviceModel": self.device_model,
            "bot": self.is_bot,
        }


class UserAgentParser:
    """Parse and classify user-agent strings; one instance per app (it holds the cache)."""

    def __init__(self, cache_size: int = 10_000) -> None:
        self._crawlers = CrawlerDetect()
        self._cached = functools.lru_cache(maxsize=cache_size)(self._parse)

    def parse(self, ua: str) -> UserAgent:
        """The parse of ``ua``'s first :data:`MAX_PARSED` characters."""
        return self._cached(ua[:MAX_PARSED])

    def is_bot(self, ua: str) -> bool:
        return self.parse(ua).is_bot

    def _parse(self, ua: str) -> UserAgent:
        if not ua.strip() or ua == "-":
            return UserAgent("", "", "", "", "bot", "", "", is_bot=True)  # nobody browses without
        parsed = user_agents.parse(ua)
        is_bot = bool(parsed.is_bot or self._crawlers.isCrawler(ua))
        if is_bot:
            device = "bot"
        elif parsed.is_tablet:
            device = "tablet"
        elif parsed.is_mobile:
            device = "mobile"
        elif parsed.is_pc:
            device = "desktop"
        else:
            device = "other"
        return UserAgent(
            browser=parsed.browser.family,
            browser_version=parsed.browser.version_string,
            os=parsed.os.family,
            os_version=parsed.os.version_string,
            device_type=device,
            device_brand=parsed.device.brand or "",
            device_model=parsed.device.model or "",
            is_bot=is_bot,
        )
