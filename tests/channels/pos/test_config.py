"""Stores and tills in the configuration: lists of secrets, references, the shipped demo."""

from __future__ import annotations

import pytest

from channels.pos.signing import tills
from gateway import config as configuration
from gateway.errors import ConfigError
from tests.conftest import ROOT

SITE = '[sites.demo]\nwrite_key = "demo-write-key"\n'


def test_the_shipped_demo_till_reads_its_keys_from_the_environment() -> None:
    config = configuration.load(ROOT / "config.toml", env={"TOUCHPOINT_TILL1_KEY": "k1"})
    (till,) = tills(config).values()
    assert (till.store, till.terminal, till.keys) == ("store-1", "till-1", (b"k1",))
    assert "k1" not in repr(config.stores)
    unset = configuration.load(ROOT / "config.toml", env={})
    assert tills(unset)["till-1"].keys == ()  # cannot sign in; not an error


def test_keys_are_a_list_of_secrets_env_or_inline() -> None:
    text = SITE + (
        '[stores.s1]\nsite = "demo"\n[stores.s1.terminals.t1]\n'
        'keys = ["inline", { env = "A" }, { env = "B" }]\n'
    )
    config = configuration.loads(text, env={"A": "from-a"})
    assert tills(config)["t1"].keys == (b"inline", b"from-a")


def test_keys_from_the_environment_override() -> None:
    text = SITE + '[stores.s1]\nsite = "demo"\n[stores.s1.terminals.t1]\nkeys = []\n'
    config = configuration.loads(text, env={"TOUCHPOINT_STORES__S1__TERMINALS__T1__KEYS": "x,y"})
    assert tills(config)["t1"].keys == (b"x", b"y")


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[stores.s1]\nsite = "nope"', "stores.s1.site", "no site 'nope'"),
        ("[stores.s1]\nname = 'x'", "stores.s1.site", "is required"),
        ('[stores.s1]\nsite = "demo"\ntimezone = "Mars/Olympus"', "stores.s1", "time zone"),
        ('[stores.s1]\nsite = "demo"\ncolour = 1', "stores.s1.colour", "unknown setting"),
        (
            '[stores.s1]\nsite = "demo"\n[stores.s1.terminals.t1]\nkeys = "k"',
            "stores.s1.terminals.t1.keys",
            "list",
        ),
        (
            '[stores.s1]\nsite = "demo"\n[stores.s1.terminals.t1]\nkeys = [{ file = "k" }]',
            "stores.s1.terminals.t1.keys[0]",
            "env",
        ),
        (
            '[stores.s1]\nsite = "demo"\n[stores.s1.terminals.t1]\n'
            '[stores.s2]\nsite = "demo"\n[stores.s2.terminals.t1]',
            "stores.s2.terminals.t1",
            "already used",
        ),
    ],
)
def test_bad_store_settings_name_the_key(text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        configuration.loads(SITE + text, env={})
    assert caught.value.key.startswith(key)
    assert reason in caught.value.reason
