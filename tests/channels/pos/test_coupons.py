"""Kiosk coupons end to end on the real app and Redis: a kiosk issues one, a till checks it,
a sale redeems it once (its retries too), a second sale is told it is gone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Config
from gateway.keys import EVENTS, Keys
from gateway.web.app import create_app
from gateway.web.state import BUS, REDIS
from tests.channels.pos.common import ENV, STORES, encode, signed, txn

Client = TestClient[web.Request, web.Application]
KIOSK = "kiosk-one-token"


@pytest.fixture
async def shop(
    aiohttp_client: Any, make_config: Callable[..., Config], service_redis_url: str, prefix: str
) -> Client:
    kiosk = '[stores.store-1.kiosks.kiosk-1]\ntoken = { env = "TOUCHPOINT_KIOSK1_TOKEN" }'
    config = make_config(
        service_redis_url, prefix, "[agents]\nrun = []", STORES, kiosk,
        "[pos]\ncoupon_valid = 3600.0", kiosk1_token=KIOSK, **ENV,
    )  # fmt: skip
    client: Client = await aiohttp_client(create_app(config))
    return client


async def issue(shop: Client) -> str:
    headers = {"Authorization": f"Bearer {KIOSK}"}
    resp = await shop.post("/v1/kiosk/store-1/identify", json={"card": "1"}, headers=headers)
    session = (await resp.json())["session"]
    body = {"session": session, "send_by": "screen"}
    resp = await shop.post("/v1/kiosk/store-1/coupon", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["coupon"])


async def check(shop: Client, code: str) -> tuple[int, dict[str, Any]]:
    path = f"/v1/pos/coupons/{code}"
    resp = await shop.get(path, headers=signed(b"", path, method="GET"))
    return resp.status, await resp.json()


async def sell(shop: Client, receipt: str, *codes: str) -> dict[str, Any]:
    body = encode(txn(receipt, coupons=list(codes)))
    resp = await shop.post("/v1/pos/transactions", data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def test_a_kiosk_coupon_is_redeemed_once_at_a_till(shop: Client) -> None:
    code = await issue(shop)
    keys = Keys(shop.app[BUS].keys.prefix)
    ttl = await shop.app[REDIS].ttl(keys.coupon(code))
    assert 3500 < ttl <= 3600  # pos.coupon_valid
    status, found = await check(shop, code)
    assert status == 200
    assert (found["status"], found["discount_percent"], found["redeemed_by"]) == ("valid", 10, None)

    first = await sell(shop, "R-1", code)
    assert first["coupons"] == {code: "redeemed"}
    again = await sell(shop, "R-1", code)  # the till's retry: the same answer
    assert again == {**first, "duplicate": True}
    other = await sell(shop, "R-2", code, "KNOPE")
    assert other["coupons"] == {code: "already redeemed", "KNOPE": "unknown"}

    status, found = await check(shop, code)
    assert (status, found["status"], found["redeemed_by"]) == (
        200,
        "redeemed",
        "store-1:till-1:R-1",
    )
    entries = await shop.app[BUS].latest(EVENTS, 100)
    sales = [e for entry in entries for e in entry.events if e.name == "Order Completed"]
    assert sorted(tuple(e.properties["coupons"]) for e in sales) == [(code,), (code, "KNOPE")]


async def test_unknown_coupons_and_bad_requests(shop: Client) -> None:
    status, found = await check(shop, "KNOPE")
    assert status == 404 and "no coupon" in found["error"]
    path = "/v1/pos/coupons/KNOPE"
    resp = await shop.get(path)  # unsigned
    assert resp.status == 401 and "error" in await resp.json()
    body = encode(txn("R-9", kind="return", coupons=["K1"]))
    resp = await shop.post("/v1/pos/transactions", data=body, headers=signed(body))
    answer = await resp.json()
    assert resp.status == 400 and answer["field"] == "coupons"


async def test_a_batch_redeems_in_line_order(shop: Client) -> None:
    first, second = await issue(shop), await issue(shop)
    lines = [txn("R-5", coupons=[first]), txn("R-6", coupons=[first, second]), txn("R-7")]
    body = b"\n".join(encode(line) for line in lines)
    path = "/v1/pos/batch"
    resp = await shop.post(path, data=body, headers=signed(body, path))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["coupons"] == {
        "store-1:till-1:R-5": {first: "redeemed"},
        "store-1:till-1:R-6": {first: "already redeemed", second: "redeemed"},
    }


async def post(shop: Client, body: bytes, path: str = "/v1/pos/transactions") -> dict[str, Any]:
    resp = await shop.post(path, data=body, headers=signed(body, path))
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def test_voiding_a_sale_gives_its_coupons_back(shop: Client) -> None:
    kept, given_back, taken = await issue(shop), await issue(shop), await issue(shop)
    await sell(shop, "R-1", given_back, taken)
    await sell(shop, "R-2", kept)
    keys = Keys(shop.app[BUS].keys.prefix)
    ttl = await shop.app[REDIS].ttl(keys.order_coupons("store-1:till-1:R-1"))
    assert 3500 < ttl <= 3600  # noted for as long as a coupon lives
    # someone else's coupon cannot come back through this sale's void: R-1 never had it
    void = encode(txn("V-1", kind="void", lines=[], total=0, original_receipt="R-1"))
    await shop.app[REDIS].hset(keys.coupon(taken), "redeemed_by", "store-1:till-1:R-9")

    answer = await post(shop, void)
    assert answer["coupons_released"] == {
        given_back: "released",
        taken: "redeemed by another order",
    }
    status, found = await check(shop, given_back)
    assert (status, found["status"], found["redeemed_by"]) == (200, "valid", None)
    assert (await check(shop, kept))[1]["redeemed_by"] == "store-1:till-1:R-2"
    again = await post(shop, void)  # the till's retry: the same answer
    assert again == {**answer, "duplicate": True}
    assert (await sell(shop, "R-3", given_back))["coupons"] == {given_back: "redeemed"}

    # a void naming no sale, or a sale with no coupon, gives nothing back; a return neither
    for other in (
        txn("V-2", kind="void", lines=[], total=0),
        txn("V-3", kind="void", lines=[], total=0, original_receipt="R-2-nope"),
        txn("T-1", kind="return", original_receipt="R-2"),
    ):
        assert "coupons_released" not in await post(shop, encode(other))
    assert (await check(shop, kept))[1]["status"] == "redeemed"


async def test_a_batch_voids_in_line_order(shop: Client) -> None:
    code = await issue(shop)
    lines = [
        txn("R-5", coupons=[code]),
        txn("V-5", kind="void", lines=[], total=0, original_receipt="R-5"),
        txn("R-6", coupons=[code]),
    ]
    body = b"\n".join(encode(line) for line in lines)
    answer = await post(shop, body, "/v1/pos/batch")
    assert answer["coupons_released"] == {"store-1:till-1:R-5": {code: "released"}}
    assert answer["coupons"] == {  # the sale after the void takes what it gave back
        "store-1:till-1:R-5": {code: "redeemed"},
        "store-1:till-1:R-6": {code: "redeemed"},
    }
