"""The referrer classifier: utm tags first, then the referring host."""

from __future__ import annotations

import pytest

from gateway.datamart.referrers import classify, host_of


@pytest.mark.parametrize(
    ("referrer", "medium", "source", "expected"),
    [
        (None, None, None, "direct"),
        ("", None, None, "direct"),
        ("https://shop.example/cart", None, None, "direct"),  # the site itself
        ("https://www.google.com/search?q=shoes", None, None, "search"),
        ("https://www.google.co.uk/", None, None, "search"),
        ("https://news.google.com/", None, None, "search"),
        ("https://duckduckgo.com/", None, None, "search"),
        ("https://www.bing.com/search?q=x", None, None, "search"),
        ("https://t.co/abc", None, None, "social"),
        ("https://m.facebook.com/story", None, None, "social"),
        ("https://www.linkedin.com/feed/", None, None, "social"),
        ("https://mail.google.com/mail/u/0/", None, None, "email"),
        ("https://outlook.live.com/mail/", None, None, "email"),
        ("https://mail.yahoo.com/", None, None, "email"),  # not Yahoo search
        ("https://blog.example.org/post", None, None, "other"),
        ("https://mygoogle.com/", None, None, "other"),
        ("https://www.google.com/", "cpc", "google", "campaign"),
        ("https://t.co/abc", None, "spring-sale", "campaign"),
        (None, "Email", "newsletter", "email"),
        (None, "newsletter", None, "email"),
    ],
)
def test_classes(
    referrer: str | None, medium: str | None, source: str | None, expected: str
) -> None:
    assert classify(referrer, medium=medium, source=source, page="shop.example") == expected


def test_subdomains_of_the_site_are_direct() -> None:
    assert classify("https://checkout.shop.example/", page="shop.example") == "direct"
    assert classify("https://shop.example/", page="https://www.shop.example/p/1") == "direct"


def test_host_of() -> None:
    assert host_of("https://WWW.Example.COM:8443/a?b") == "example.com"
    assert host_of("example.com/path") == "example.com"
    assert host_of("http://[::1/") == ""
    assert host_of(None) == ""
