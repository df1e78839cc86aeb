"""``GET /v1/olap`` on the real app, and ``touchpoint olap`` / ``touchpoint warehouse migrate``,
on both engines."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import cli
from gateway.config import Config
from gateway.warehouse import migrations, open_warehouse
from gateway.web.app import create_app
from gateway.web.state import ADMIN_TOKEN, WAREHOUSE
from tests.gateway.warehouse import data
from tests.gateway.warehouse.data import count, day, humans

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def config(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str, warehouse_section: str
) -> Config:
    return make_config(service_redis_url, prefix, warehouse_section, "[agents]\nrun = []")


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> Client:
    """The app (its cleanup context migrated the warehouse) with the generated shop loaded."""
    client: Client = await aiohttp_client(create_app(config))
    await data.generate().load(client.app[WAREHOUSE])
    return client


def admin(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app[ADMIN_TOKEN]}"}


async def test_json_answer(client: Client) -> None:
    shop = data.generate()
    params = {
        "measures": "events,sessions",
        "dims": "day,channel",
        "filters": "channel=web,email",
        "from": "2026-01-04",
        "to": "2026-01-07",
    }
    resp = await client.get("/v1/olap", params=params, headers=admin(client))
    assert resp.status == 200
    body = await resp.json()
    assert body["columns"] == ["day", "channel", "events", "sessions"]

    def kept(ts: Any, channel: str) -> bool:
        return channel in ("web", "email") and "2026-01-04" <= day(ts) < "2026-01-07"

    events = count(
        [e for e in humans(shop) if kept(e["ts"], e["channel"])],
        lambda e: (day(e["ts"]), e["channel"]),
    )
    sessions = count(
        [s for s in shop.sessions if kept(s["started_at"], s["channel"])],
        lambda s: (day(s["started_at"]), s["channel"]),
    )
    expected = [
        [*key, events.get(key, 0), sessions.get(key, 0)] for key in sorted({*events, *sessions})
    ]
    assert body["rows"] == expected


async def test_csv_answer_with_repeated_filters(client: Client) -> None:
    query = "measures=events&dims=device_type&filters=channel=web&filters=site=shop&format=csv"
    resp = await client.get(f"/v1/olap?{query}", headers=admin(client))
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert rows[0] == ["device_type", "events"]
    shop = data.generate()
    kept = [e for e in humans(shop) if e["channel"] == "web" and e["site"] == "shop"]
    expected = count(kept, lambda e: e["device_type"] or "")
    assert {device: int(n) for device, n in rows[1:]} == expected


async def test_without_the_admin_token_401(client: Client) -> None:
    resp = await client.get("/v1/olap?measures=events")
    assert resp.status == 401
    assert "admin token" in (await resp.json())["error"]
    resp = await client.get("/v1/olap?measures=events", headers={"Authorization": "Bearer no"})
    assert resp.status == 401


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("measures=events,bogus", "measures", "unknown measure 'bogus'"),
        ("measures=events&dims=colour", "dims", "unknown dimension 'colour'"),
        ("measures=sessions&dims=store", "dims", "'store' does not apply to measure 'sessions'"),
        ("measures=events&from=yesterday", "from", "not an ISO date"),
        ("measures=events&format=xml", "format", "unknown format 'xml'"),
    ],
)
async def test_bad_queries_400_naming_the_problem(
    client: Client, query: str, field: str, message: str
) -> None:
    resp = await client.get(f"/v1/olap?{query}", headers=admin(client))
    assert resp.status == 400
    body = await resp.json()
    assert message in body["error"]
    assert body["field"] == field


async def test_cli_migrate_and_olap(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    def touchpoint(*args: str) -> int:
        return cli.main([*args, "--config", config.source])

    assert await asyncio.to_thread(touchpoint, "warehouse", "migrate") == 0
    applied = ", ".join(str(m.version) for m in migrations.MIGRATIONS)
    assert capsys.readouterr().out == f"applied migrations {applied}\n"
    assert await asyncio.to_thread(touchpoint, "warehouse", "migrate") == 0
    assert capsys.readouterr().out == "up to date\n"

    warehouse = await open_warehouse(config)
    shop = data.generate()
    try:
        await shop.load(warehouse)
    finally:
        await warehouse.close()

    args = ["olap", "--measures", "events,revenue", "--dims", "channel", "--filter", "site=shop"]
    assert await asyncio.to_thread(touchpoint, *args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["channel", "events", "revenue"]
    assert set(lines[1]) == {"-", " "}
    events = count([e for e in humans(shop) if e["site"] == "shop"], lambda e: e["channel"])
    printed = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in lines[2:]}
    assert printed == events

    assert await asyncio.to_thread(touchpoint, *args, "--format", "json") == 0
    body = json.loads(capsys.readouterr().out)
    assert {row[0]: row[1] for row in body["rows"]} == events

    assert await asyncio.to_thread(touchpoint, *args, "--format", "csv") == 0
    assert capsys.readouterr().out.splitlines()[0] == "channel,events,revenue"

    assert await asyncio.to_thread(touchpoint, "olap", "--measures", "bogus") == 2
    assert "unknown measure 'bogus'" in capsys.readouterr().err
