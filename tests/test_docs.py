"""The README is part of the product: every setting is documented, the commands are there."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from gateway.config import Config, _fields, _mapping_value, _strip
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def settings(cls: Any = Config, prefix: str = "") -> Iterator[str]:
    for name, hint in _fields(cls).items():
        base = _strip(hint)
        if dataclasses.is_dataclass(base):
            yield from settings(base, f"{prefix}{name}.")
        elif (inner := _mapping_value(base)) is not None:
            yield from settings(_strip(inner), f"{prefix}{name}.<name>.")
        else:
            yield f"{prefix}{name}"


def reference() -> str:
    match = re.search(r"^## Configuration reference$(.*?)^## ", README, re.M | re.S)
    assert match, "README.md has no '## Configuration reference' section"
    return match.group(1)


def test_every_setting_is_in_the_configuration_reference() -> None:
    documented = set(re.findall(r"^\| `([a-z_.<>]+)` \|", reference(), re.M))
    missing = sorted(set(settings()) - documented)
    assert not missing, f"settings missing from README's configuration reference: {missing}"
    unknown = sorted(documented - set(settings()))
    assert not unknown, f"README documents settings that do not exist: {unknown}"


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:25])
    assert "make run" in head and "make test" in head
