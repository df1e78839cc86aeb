"""What every web capture path shares: who is sending, from where, and what gets stored.

:func:`enrich` is a plain function (no I/O): it adds the parsed user agent and the bot flag,
anonymizes the IP address per site, and honours Do-Not-Track / Global Privacy Control by
stripping every identifier. :func:`capture` publishes the result with ``messageId``
de-duplication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from channels.weblog.useragents import UserAgentParser
from gateway import keys as K
from gateway.config import Config, SiteConfig
from gateway.events import Event
from gateway.privacy import anonymize_ip
from gateway.web.auth import basic_user
from gateway.web.state import CONFIG, COUNTERS, PUBLISHER

UA = web.AppKey("web_user_agents", UserAgentParser)

#: Events that exist only to carry identity: dropped when the browser asks not to be tracked.
IDENTITY_TYPES = frozenset({"identify", "alias", "group"})


def setup(app: web.Application) -> None:
    app[UA] = UserAgentParser(app[CONFIG].web.ua_cache)


@dataclass(frozen=True, slots=True)
class Client:
    """The sender of a request, as the request shows it."""

    ip: str
    user_agent: str
    referer: str
    #: The browser sent ``DNT: 1`` or ``Sec-GPC: 1``.
    no_tracking: bool


def client_of(request: web.Request, trust_forwarded: bool) -> Client:
    headers = request.headers
    ip = request.remote or ""
    if trust_forwarded and (forwarded := headers.get("X-Forwarded-For")):
        ip = forwarded.split(",", 1)[0].strip()
    return Client(
        ip=_text(ip),
        user_agent=_text(headers.get("User-Agent", "")),
        referer=_text(headers.get("Referer", "")),
        no_tracking=headers.get("DNT") == "1" or headers.get("Sec-GPC") == "1",
    )


def _text(header: str) -> str:
    """A header value as text events can carry: bytes that are not UTF-8 (aiohttp keeps them as
    lone surrogates, which msgpack refuses) become U+FFFD."""
    if header.isascii():
        return header
    return header.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def site_of(request: web.Request, config: Config, write_key: str | None) -> tuple[str, SiteConfig]:
    """The site whose write key the request carries (Basic user, or in the body); 401 else."""
    key = basic_user(request.headers.get("Authorization", "")) or write_key
    name = config.site_for_key(key) if key else None
    if name is None:
        raise web.HTTPUnauthorized(
            reason="missing or unknown write key (HTTP Basic user name, or writeKey in the body)",
            headers={"WWW-Authenticate": 'Basic realm="touchpoint"'},
        )
    return name, config.sites[name]


def check_origin(request: web.Request, site: SiteConfig) -> None:
    """A browser page may send for a site only from one of its allowed origins."""
    origin = request.headers.get("Origin")
    if origin and "*" not in site.allowed_origins and origin not in site.allowed_origins:
        raise web.HTTPForbidden(reason=f"origin {origin!a} may not send events for this site")


def cors_headers(request: web.Request, config: Config) -> dict[str, str]:
    """CORS response headers for an origin some site allows (preflights carry no write key)."""
    origin = request.headers.get("Origin")
    if not origin:
        return {}
    if not any(
        "*" in s.allowed_origins or origin in s.allowed_origins for s in config.sites.values()
    ):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def enrich(event: Event, client: Client, site: SiteConfig, ua: UserAgentParser) -> Event | None:
    """The event as it is stored; None when privacy says it must not be."""
    context: dict[str, Any] = dict(event.context)
    no_tracking = site.honor_dnt and (client.no_tracking or context.get("dnt") is True)
    if no_tracking and event.type in IDENTITY_TYPES:
        return None
    agent = str(context.get("userAgent") or client.user_agent)
    parsed = ua.parse(agent)
    context["userAgent"] = agent
    context["userAgentData"] = parsed.as_context()
    if parsed.is_bot:
        context["bot"] = True
    page = context.get("page")
    if client.referer and not (isinstance(page, dict) and page.get("url")):
        context["page"] = {**(page if isinstance(page, dict) else {}), "url": client.referer}
    channel = "mobile" if _from_an_app(context) else event.channel
    if no_tracking:
        context.pop("ip", None)
        context["dnt"] = True
        return msgspec.structs.replace(
            event,
            channel=channel,
            context=context,
            anonymous_id=None,
            user_id=None,
            previous_id=None,
            traits={},
        )
    ip = str(context.get("ip") or client.ip)
    context["ip"] = anonymize_ip(ip) if site.anonymize_ip else ip
    return msgspec.structs.replace(event, channel=channel, context=context)


def _from_an_app(context: dict[str, Any]) -> bool:
    """Segment's mobile SDKs describe the app and the device: those events are channel mobile."""
    device = context.get("device")
    return isinstance(context.get("app"), dict) or (
        isinstance(device, dict) and str(device.get("type", "")).lower() in {"ios", "android"}
    )


@dataclass(frozen=True)
class Captured:
    accepted: int
    duplicates: int
    withheld: int


async def capture(
    request: web.Request, client: Client, site_name: str, events: Sequence[Event]
) -> Captured:
    """Enrich and publish; answer once the events are in Redis."""
    app = request.app
    config = app[CONFIG]
    site, ua = config.sites[site_name], app[UA]
    stored = [e for e in (enrich(e, client, site, ua) for e in events) if e is not None]
    counters = app[COUNTERS]
    published = None
    if stored:
        published = await app[PUBLISHER].publish(K.EVENTS, stored, dedup=config.web.dedup_window)
    for event in stored:
        counters.received[event.channel] = counters.received.get(event.channel, 0) + 1
        counters.bots += bool(event.context.get("bot"))
    accepted = published.events if published else 0
    return Captured(
        accepted=accepted,
        duplicates=published.duplicates if published else 0,
        withheld=len(events) - len(stored),
    )
