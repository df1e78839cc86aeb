"""The value types settings are made of: secrets, ports, durations, names."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from gateway.errors import ConfigError


class Secret:
    """A value read from the environment (or written inline); never shown in reprs or logs."""

    __slots__ = ("_value", "env")

    def __init__(self, value: str | None, env: str | None = None) -> None:
        self._value = value
        self.env = env

    @property
    def is_set(self) -> bool:
        return bool(self._value)

    def get(self) -> str:
        if not self._value:
            raise ConfigError("environment", self.env or "secret", "is not set")
        return self._value

    def __repr__(self) -> str:
        source = f"env {self.env}" if self.env else "inline"
        return f"Secret({source}, {'set' if self.is_set else 'unset'})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self._value, self.env) == (other._value, other.env)

    def __hash__(self) -> int:
        return hash((self._value, self.env))


#: Ten years: longer than any setting means, short enough for every API a duration reaches
#: (Redis' BLOCK and PX, asyncio's timeouts; ``inf`` crashed the agents at run time).
LONGEST: Final = 315_360_000.0
#: Counts (batch sizes, caps) Redis and the drivers take as signed 32-bit numbers at most.
LARGEST: Final = 2**31 - 1

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=LONGEST)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=LARGEST)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
