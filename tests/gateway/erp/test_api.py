"""``GET /v1/products/{sku}`` on the real app, the ``erp`` agent in the registry, and
``touchpoint erp sync`` / ``erp status``, on both engines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import cli
from gateway.agents import AGENTS, AgentContext
from gateway.agents.erp import ErpAgent
from gateway.agents.runtime import Ticking
from gateway.config import Config
from gateway.erp import open_connector
from gateway.erp.files import FileConnector
from gateway.web.app import create_app
from gateway.web.state import ADMIN_TOKEN, BUS, REDIS, WAREHOUSE

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def config(
    make_config: Callable[..., Config], service_redis_url: str, prefix: str, warehouse_section: str
) -> Config:
    return make_config(
        service_redis_url,
        prefix,
        warehouse_section,
        "[agents]\nrun = []",
        erp__files__seed_demo="true",
    )


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> Client:
    client: Client = await aiohttp_client(create_app(config))
    return client


def admin(client: Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app[ADMIN_TOKEN]}"}


async def test_the_product_with_its_stock_per_location(client: Client, config: Config) -> None:
    app = client.app
    spec = AGENTS["erp"]
    assert spec.needs_warehouse
    ctx = AgentContext(config, app[REDIS], app[BUS].keys, app[BUS], app[WAREHOUSE])
    agent = spec.make(ctx)
    assert isinstance(agent, ErpAgent) and isinstance(agent, Ticking)
    await agent.tick()  # the demo catalogue, seeded

    assert (await client.get("/v1/products/SKU-1001")).status == 401
    assert (await client.get("/v1/products/SKU-9999", headers=admin(client))).status == 404
    resp = await client.get("/v1/products/SKU-1001", headers=admin(client))
    assert resp.status == 200
    body = await resp.json()
    assert (body["sku"], body["name"], body["price"], body["currency"], body["active"]) == (
        "SKU-1001",
        "Trail Running Shoes",
        89.9,
        "EUR",
        True,
    )
    assert {loc: s["quantity"] for loc, s in body["stock"].items()} == {
        "store-1": 5.0,
        "store-2": 0.0,
        "web": 42.0,
    }
    assert all(s["confirmed_at"] for s in body["stock"].values())
    assert body["stock_synced_at"] and body["stock_stale"] is False


def test_cli_sync_and_status(
    make_config: Callable[..., Config],
    service_redis_url: str,
    prefix: str,
    warehouse_section: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_file = make_config(
        service_redis_url, prefix, warehouse_section, erp__files__seed_demo="true"
    ).source
    assert cli.main(["erp", "status", "--config", config_file]) == 0
    assert "never synced" in capsys.readouterr().out
    assert cli.main(["erp", "sync", "--entity", "stock", "--config", config_file]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["entity"], line["rows"]) == ("stock", 36)
    args = ["erp", "sync", "--entity", "stock", "--entity", "stores", "--config", config_file]
    assert cli.main(args) == 0
    assert [json.loads(x)["entity"] for x in capsys.readouterr().out.splitlines()] == [
        "stores",
        "stock",
    ]
    assert cli.main(["erp", "sync", "--config", config_file]) == 0
    assert [json.loads(x)["entity"] for x in capsys.readouterr().out.splitlines()] == [
        "stores",
        "products",
        "stock",
        "customers",
        "sales",
    ]
    assert cli.main(["erp", "status", "--json", "--config", config_file]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["products"]["rows"] == 12 and status["stock"]["stale"] is False
    assert cli.main(["erp", "status", "--config", config_file]) == 0
    assert "stock     ok" in capsys.readouterr().out


#: The CLI reads the file alone (make_config's environment is not its own).
NO_DEMO = "[erp.files]\nseed_demo = false"


def test_cli_sync_names_the_files_that_failed_and_exits_1(
    make_config: Callable[..., Config],
    service_redis_url: str,
    prefix: str,
    warehouse_section: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A drop file moved to ``failed/`` is no success: the entity's line names it and why."""
    config = make_config(service_redis_url, prefix, warehouse_section, NO_DEMO)
    config.erp_drop_dir.mkdir(parents=True)
    (config.erp_drop_dir / "stock-bad.csv").write_text("sku,quantity\nSKU-1001,1\n")
    assert cli.main(["erp", "sync", "--entity", "stock", "--config", config.source]) == 1
    line = json.loads(capsys.readouterr().out)
    assert (line["entity"], line["rows"], "error" in line) == ("stock", 0, False)
    assert line["failed"] == {
        "stock-bad.csv": "missing column(s): location (header: ['sku', 'quantity'])"
    }
    assert (config.erp_drop_dir / "failed" / "stock-bad.csv").exists()
    assert cli.main(["erp", "sync", "--entity", "stock", "--config", config.source]) == 0
    assert "failed" not in json.loads(capsys.readouterr().out)  # it failed once, and is gone


def test_cli_without_redis_is_a_one_line_error(
    make_config: Callable[..., Config],
    prefix: str,
    warehouse_section: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As ``bus`` and the imports: one line saying Redis cannot be reached, exit 2."""
    config = make_config("redis://127.0.0.1:1", prefix, warehouse_section)
    for command in (["erp", "sync", "--entity", "stock", "--no-progress"], ["erp", "status"]):
        assert cli.main([*command, "--config", config.source]) == 2
        out, err = capsys.readouterr()  # the warehouse's migrations are logged first
        assert out == "" and "Traceback" not in err, err
        last = err.splitlines()[-1]
        assert last.startswith("touchpoint: error: erp ") and "127.0.0.1:1" in last, err


def test_the_drop_folder_is_configurable(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    connector = open_connector(make_config())
    assert isinstance(connector, FileConnector)
    assert connector.folder == tmp_path / "var" / "erp-drop"
    config = make_config("", "tp", '[erp.files]\ndir = "drops"\nseed_demo = false')
    connector = open_connector(config)
    assert isinstance(connector, FileConnector)
    assert (connector.folder, connector.files.seed_demo) == (tmp_path / "drops", False)
