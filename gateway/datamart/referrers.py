"""Where a visit came from: a referrer class from the referring URL and the campaign tags.

Plain functions, no I/O. The classes: ``campaign`` (utm tags), ``email`` (utm_medium email, or
a webmail referrer), ``search``, ``social``, ``direct`` (no referrer, or the site itself) and
``other``. Host lists are short and cover the engines and networks that send real traffic;
anything else is ``other``.
"""

from __future__ import annotations

import functools
from typing import Final, Literal
from urllib.parse import urlsplit

ReferrerClass = Literal["search", "social", "email", "direct", "campaign", "other"]

#: An entry ending with "." matches that label with any suffix ("google." → google.co.uk).
SEARCH: Final = (
    "google.", "bing.com", "duckduckgo.com", "yahoo.", "baidu.com", "yandex.", "ecosia.org",
    "qwant.com", "startpage.com", "search.brave.com", "naver.com", "seznam.cz", "ask.com",
)  # fmt: skip
SOCIAL: Final = (
    "facebook.com", "fb.com", "instagram.com", "t.co", "twitter.com", "x.com", "linkedin.com",
    "lnkd.in", "pinterest.", "reddit.com", "youtube.com", "tiktok.com", "snapchat.com",
    "tumblr.com", "vk.com", "threads.net", "bsky.app", "mastodon.social", "whatsapp.com",
    "t.me", "telegram.org",
)  # fmt: skip
WEBMAIL: Final = (
    "mail.google.com", "outlook.live.com", "outlook.office.com", "outlook.office365.com",
    "mail.yahoo.com", "mail.aol.com", "mail.proton.me", "mail.zoho.com", "webmail.",
    "mail.gmx.net", "email.t-online.de",
)  # fmt: skip
EMAIL_MEDIUMS: Final = frozenset({"email", "e-mail", "mail", "newsletter"})


def host_of(url: str | None) -> str:
    """The lower-case host of ``url`` without ``www.``; "" when there is none."""
    if not url:
        return ""
    try:
        host = urlsplit(url if "//" in url else "//" + url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


def _listed(host: str, entries: tuple[str, ...]) -> bool:
    for entry in entries:
        if entry.endswith("."):
            if host.startswith(entry) or ("." + entry) in "." + host:
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


def same_site(host: str, page_host: str) -> bool:
    """Whether a referring host is the site itself (or a subdomain of it, or it of the site)."""
    return bool(page_host) and (
        host == page_host or host.endswith("." + page_host) or page_host.endswith("." + host)
    )


def classify(
    referrer: str | None,
    *,
    medium: str | None = None,
    source: str | None = None,
    page: str = "",
) -> ReferrerClass:
    """The class of a visit's entry: utm tags first, then the referring host (a referrer on
    the site of ``page``, the landing page's URL or host, is ``direct``)."""
    medium = (medium or "").strip().lower()
    if medium in EMAIL_MEDIUMS:
        return "email"
    if medium or (source or "").strip():
        return "campaign"
    host = host_of(referrer)
    if not host or same_site(host, host_of(page) or page):
        return "direct"
    return _class_of_host(host)


@functools.lru_cache(maxsize=4096)
def _class_of_host(host: str) -> ReferrerClass:
    """The class of a referring host that is not the site itself (a visit's first event asks
    for the same few hosts again and again)."""
    if _listed(host, WEBMAIL):
        return "email"
    if _listed(host, SEARCH):
        return "search"
    if _listed(host, SOCIAL):
        return "social"
    return "other"
