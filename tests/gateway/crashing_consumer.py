"""A channel-counts member that dies mid-batch: run by test_runtime, killed with SIGKILL.

It counts the first half of its first batch (a partial side effect), says so in Redis, and
then hangs until the test kills it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from gateway.agents import counts
from gateway.agents.runtime import Agent
from gateway.bus import Bus, Entry
from gateway.config import BusConfig
from gateway.keys import EVENTS, Keys
from gateway.redis import connect


async def main(url: str, prefix: str) -> None:
    client = connect(url, timeout=10)
    keys = Keys(prefix)
    count = counts.handler(client, keys)

    async def half_then_hang(entries: Sequence[Entry]) -> None:
        await count(entries[: len(entries) // 2])
        await client.set(f"{prefix}:crash-marker", len(entries))
        await asyncio.Event().wait()

    bus = Bus(client, keys, BusConfig(batch=50))
    await Agent("channel-counts", half_then_hang, bus, stream=EVENTS, consumer="doomed").run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
