"""The dashboard's pages and their sign-in: a login form, a signed cookie, no open redirect."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Config
from gateway.web.app import create_app
from gateway.web.auth import SESSION_COOKIE, session_cookie
from gateway.web.state import ADMIN_TOKEN
from tests.helpers import eventually

Client = TestClient[web.Request, web.Application]
WRITE = {"Authorization": "Basic " + base64.b64encode(b"demo-write-key:").decode()}


@pytest.fixture
async def client(
    aiohttp_client: Any, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> Client:
    config = make_config(service_redis_url, prefix, "[bus]\nblock = 0.1")
    return await aiohttp_client(create_app(config))  # type: ignore[no-any-return]


async def sign_in(client: Client, token: str | None = None, next_: str = "") -> Any:
    return await client.post(
        "/dashboard/login",
        data={"token": token or client.app[ADMIN_TOKEN], "next": next_},
        allow_redirects=False,
    )


async def test_pages_send_strangers_to_the_login_form(client: Client) -> None:
    resp = await client.get("/dashboard/agents?x=1", allow_redirects=False)
    assert resp.status == 302
    location = urlsplit(resp.headers["Location"])
    assert location.path == "/dashboard/login"
    assert parse_qs(location.query)["next"] == ["/dashboard/agents?x=1"]
    assert (await client.get("/v1/dashboard/live")).status == 401


async def test_login_sets_a_signed_cookie_and_returns_to_the_page(client: Client) -> None:
    wrong = await sign_in(client, token="not-the-token")
    assert wrong.status == 401
    assert "That token is not right." in await wrong.text()
    resp = await sign_in(client, next_="/dashboard/agents")
    assert (resp.status, resp.headers["Location"]) == (302, "/dashboard/agents")
    cookie = resp.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    page = await client.get("/dashboard/agents")
    assert page.status == 200
    assert "channel-counts" in await page.text()
    out = await client.post("/dashboard/logout", allow_redirects=False)
    assert out.status == 302
    assert (await client.get("/dashboard/", allow_redirects=False)).status == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/v1/events"])
async def test_login_is_not_an_open_redirect(client: Client, target: str) -> None:
    resp = await sign_in(client, next_=target)
    assert resp.headers["Location"] == "/dashboard/"


async def test_forged_or_expired_cookies_are_refused(client: Client) -> None:
    token = client.app[ADMIN_TOKEN]
    expired = session_cookie(token, now=0)
    forged = session_cookie("another-token")
    huge = "9" * 4301 + ".abc"  # int() refuses over 4,300 digits: once a 500
    for value in (expired, forged, "garbage", "²⁰.abc", f"{expired.partition('.')[0]}.é", huge):
        client.session.cookie_jar.update_cookies({SESSION_COOKIE: value})
        assert (await client.get("/v1/dashboard/live")).status == 401
    client.session.cookie_jar.clear()
    bearer = {"Authorization": "Bearer jéton"}  # non-ASCII: refused, not a 500
    assert (await client.get("/v1/dashboard/live", headers=bearer)).status == 401


async def test_overview_and_live_counts(client: Client) -> None:
    await sign_in(client)
    html = await (await client.get("/dashboard/")).text()
    assert "Events per minute" in html and "uPlot.iife.min.js" in html
    script = await client.get("/dashboard/static/vendor/uplot/uPlot.iife.min.js")
    assert script.status == 200
    batch = {"batch": [{"type": "page", "anonymousId": f"a{i}"} for i in range(5)]}
    assert (await client.post("/v1/batch", json=batch, headers=WRITE)).status == 200

    async def counted() -> dict[str, Any]:
        live = await (await client.get("/v1/dashboard/live")).json()
        return live if sum(live["series"].get("web", [])) == 5 else {}

    live = await eventually(counted)
    assert len(live["minutes"]) == 60 == len(live["series"]["web"])
    bearer = {"Authorization": f"Bearer {client.app[ADMIN_TOKEN]}"}
    client.session.cookie_jar.clear()
    assert (await client.get("/v1/dashboard/live", headers=bearer)).status == 200


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"token=\xff"),
        ("application/x-www-form-urlencoded; charset=nope", b"token=x"),
        ("multipart/form-data", b"token=x"),  # no boundary
        ("multipart/form-data; boundary=zz", b"garbage"),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="token"\r\n'
            b"Content-Transfer-Encoding: foo\r\n\r\nx\r\n--zz--\r\n",
        ),
    ],
)
async def test_an_unreadable_login_form_is_a_400(
    client: Client, content_type: str, body: bytes
) -> None:
    resp = await client.post("/dashboard/login", data=body, headers={"Content-Type": content_type})
    assert resp.status == 400
    assert "unreadable form" in (await resp.json())["error"]


async def test_a_static_name_too_long_for_the_filesystem_is_not_found(client: Client) -> None:
    resp = await client.get("/dashboard/static/" + "x" * 300)  # ENAMETOOLONG: once a 500
    assert resp.status == 404
    assert "error" in await resp.json()
