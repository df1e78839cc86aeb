"""Who is calling: a site by its write key (HTTP Basic user, as Segment SDKs send it) or an
administrator by the bearer token."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets

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
    except (binascii.Error, UnicodeDecodeError):
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


def require_admin(request: web.Request, token: str) -> None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise web.HTTPUnauthorized(
            reason="admin token required (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": 'Bearer realm="touchpoint"'},
        )
