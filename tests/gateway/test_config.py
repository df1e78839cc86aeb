"""Configuration: the shipped file, validation errors naming file and key, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import cli
from gateway import config as configuration
from gateway.config import Config, Secret
from gateway.errors import ConfigError
from tests.conftest import ROOT


def test_shipped_config_runs_as_is() -> None:
    config = configuration.load(ROOT / "config.toml", env={})
    assert config.http.port == 8080
    assert not config.redis.url.is_set  # embedded mode
    assert config.warehouse.engine == "duckdb"
    assert config.site_for_key("demo-write-key") == "demo"
    assert config.agents.run == ("channel-counts", "collector", "sync-sessions", "erp")


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[http]\nport = 0", "http.port", ">= 1"),
        ("[http]\nport = 'eighty'", "http.port", "Expected int, got str"),
        ("[http]\nprot = 8080", "http.prot", "unknown setting"),
        ("[nope]\nx = 1", "nope", "unknown setting"),
        ("[warehouse]\nengine = 'sqlite'", "warehouse.engine", "Invalid enum value 'sqlite'"),
        ("[redis]\nappendfsync = 'sometimes'", "redis.appendfsync", "Invalid enum value"),
        ("[bus]\nclaim_idle = -1.0", "bus.claim_idle", "> 0"),
        ("[sites.shop]\nwrite_key = 'short'", "sites.shop.write_key", "length >= 8"),
        ("[sites.shop]\nwrte_key = 'abcdefghij'", "sites.shop.wrte_key", "unknown setting"),
        ("[sites.shop]\n", "sites.shop.write_key", "is required"),
        ("[admin]\ntoken = { envv = 'X' }", "admin.token", '{ env = "NAME" }'),
        ("[agents]\nrun = ['Not A Name']", "agents.run[0]", "Expected str matching"),
        # no bound once: inf crashed the agents at run time, huge counts wedged Redis calls,
        # 100,000 DuckDB threads hung and 2^63 aborted the process
        ("[bus]\nblock = inf", "bus.block", "<= 315360000.0"),
        ("[collector]\nsession_timeout = 1e300", "collector.session_timeout", "<="),
        ("[web]\ndedup_window = inf", "web.dedup_window", "<="),
        ("[bus]\nbatch = 9223372036854775807", "bus.batch", "<= 2147483647"),
        ("[warehouse]\nthreads = 100000", "warehouse.threads", "<= 1024"),
        ("[warehouse]\nreaders = 100000", "warehouse.readers", "<= 256"),
        ("[redis]\nurl = 'not-a-url'", "redis.url", "must specify one of the following schemes"),
        ("[redis]\nurl = 'redis://127.0.0.1:99999'", "redis.url", "Port out of range"),
        ("[redis]\nurl = 'redis://127.0.0.1:0'", "redis.url", "port 0 is no port"),
    ],
)
def test_bad_settings_name_file_and_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        configuration.load(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message
    assert "\n" not in message


def test_toml_syntax_error_says_where(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[http]\nport = = 1\n")
    with pytest.raises(ConfigError, match=r"broken.toml: invalid TOML: .*line 2"):
        configuration.load(path, env={})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"# \xff\n", "not UTF-8 (byte 2)"),
        (b"a = " + b"[" * 500 + b"]" * 500, "invalid TOML: nested too deeply"),
        (b"x = 1" + b"0" * 4300, "invalid TOML: "),
    ],
)
def test_a_file_that_is_no_toml_at_all_is_one_line(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "odd.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        configuration.load(path, env={})
    assert str(caught.value).startswith(f"{path}: {reason}")


def test_environment_overrides() -> None:
    env = {
        "TOUCHPOINT_HTTP__PORT": "8081",
        "TOUCHPOINT_BUS__CLAIM_IDLE": "2.5",
        "TOUCHPOINT_AGENTS__RUN": "channel-counts, other",
        "TOUCHPOINT_SITES__SHOP__WRITE_KEY": "shop-write-key",
        "TOUCHPOINT_REDIS__URL": "redis://10.0.0.1:6379/0",
        "TOUCHPOINT_CONFIG": "ignored: not a setting",
        "UNRELATED__THING": "x",
    }
    config = configuration.load(ROOT / "config.toml", env=env)
    assert config.http.port == 8081
    assert config.bus.claim_idle == 2.5
    assert config.agents.run == ("channel-counts", "other")
    assert config.site_for_key("shop-write-key") == "shop"
    assert config.site_for_key("demo-write-key") == "demo"  # the file's site is kept
    assert config.redis.url.get() == "redis://10.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("TOUCHPOINT_HTTP__PORT", "eighty", "http.port: Expected int, got str"),
        ("TOUCHPOINT_HTTP__PORT", "70000", "http.port: Expected int <= 65535"),
        ("TOUCHPOINT_HTTP__NOPE", "1", "http.nope: unknown setting"),
    ],
)
def test_bad_environment_override_names_the_variable(name: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        configuration.load(ROOT / "config.toml", env={name: value})
    assert name in str(caught.value)
    assert reason in str(caught.value)


def test_secrets_come_from_the_environment_and_stay_masked() -> None:
    text = "[admin]\ntoken = { env = 'MY_TOKEN' }"
    config = configuration.loads(text, env={"MY_TOKEN": "s3cret-value"})
    assert config.admin.token.get() == "s3cret-value"
    assert "s3cret" not in repr(config)
    unset = configuration.loads(text, env={})
    assert not unset.admin.token.is_set
    with pytest.raises(ConfigError, match="MY_TOKEN: is not set"):
        unset.admin.token.get()


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(AttributeError):
        config.http.port = 1  # type: ignore[misc]
    assert isinstance(config.admin.token, Secret)


def test_relative_data_dir_follows_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "touchpoint.toml"
    path.parent.mkdir()
    path.write_text("[data]\ndir = 'state'\n")
    assert configuration.load(path, env={}).data_dir == path.parent.resolve() / "state"


def test_check_config_prints_ok_or_the_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check-config", str(ROOT / "config.toml")]) == 0
    assert capsys.readouterr().out == "ok\n"
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nport = 'x'\n")
    assert cli.main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"touchpoint: error: {bad}: http.port: Expected int, got str\n"
    assert cli.main(["--config", str(bad), "check-config"]) == 2
    capsys.readouterr()
    # what serve would refuse, check-config refuses (it said ok to these)
    for run, reason in ((["nope"], "no agent 'nope'"), (["collector", "filter"], "not both")):
        bad.write_text(f"[agents]\nrun = {run}\n")
        assert cli.main(["check-config", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: agents.run: " in err and reason in err


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[erp]\nconnector = "sql"', "erp.sql.dsn"),
        ('[erp]\nconnector = "tryton"', "erp.tryton.api_key"),
    ],
)
def test_an_erp_connector_without_its_credentials_is_refused(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"cfg.toml: {key}: "):
        configuration.loads(text, source="cfg.toml", env={})
    with_secret = {
        "TOUCHPOINT_ERP__SQL__DSN": "postgresql://erp",
        "TOUCHPOINT_ERP__TRYTON__API_KEY": "k",
    }
    assert configuration.loads(text, env=with_secret).erp.connector in ("sql", "tryton")
