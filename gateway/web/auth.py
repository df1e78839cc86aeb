"""Who is calling: a site by its write key (HTTP Basic user, as Segment SDKs send it) or an
administrator by the bearer token."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time

from aiohttp import web

from gateway.config import Config

log = logging.getLogger(__name__)


def site_for(request: web.Request, config: Config) -> str:
    """The site whose write key the request carries; 401 otherwise."""
    key = basic_user(request.headers.get("Authorization", ""))
    site = config.site_for_key(key) if key else None
    if site is None:
        raise web.HTTPUnauthorized(
            reason="missing or unknown write key (send it as the HTTP Basic user name)",
            headers={"WWW-Authenticate": 'Basic realm="touchpoint"'},
        )
    return site


def basic_user(header: str) -> str | None:
    """The user name of an HTTP Basic Authorization header."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # not base64; not ASCII (b64decode refuses it)
        return None
    return decoded.partition(":")[0] or None


def admin_token(config: Config) -> str:
    """The configured admin token, or a random one for this run (logged once)."""
    if config.admin.token.is_set:
        return config.admin.token.get()
    token = secrets.token_urlsafe(24)
    env = config.admin.token.env or "TOUCHPOINT_ADMIN__TOKEN"
    log.warning("admin.token is not set (%s); this run's admin token: %s", env, token)
    return token


SESSION_COOKIE = "tp_session"
SESSION_SECONDS = 12 * 3600


def session_cookie(token: str, now: float | None = None) -> str:
    """A dashboard session: its expiry, signed with the admin token (no server-side state)."""
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    return f"{expires}.{_sign(token, expires)}"


def _sign(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"session:{expires}".encode(), hashlib.sha256).hexdigest()


def is_admin(request: web.Request, token: str) -> bool:
    """A bearer token (API clients) or a signed, unexpired session cookie (the dashboard)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(client_bytes(given.strip()), token.encode())
    expires, _, signature = request.cookies.get(SESSION_COOKIE, "").partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    if int(expires) < time.time():
        return False
    return hmac.compare_digest(client_bytes(signature), _sign(token, int(expires)).encode())


def client_bytes(given: str) -> bytes:
    """A value a client sent, comparable with ``hmac.compare_digest`` whatever it holds (the
    function refuses non-ASCII text with a TypeError)."""
    return given.encode("utf-8", "surrogateescape")


def require_admin(request: web.Request, token: str) -> None:
    if not is_admin(request, token):
        raise web.HTTPUnauthorized(
            reason="admin token required (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": 'Bearer realm="touchpoint"'},
        )
