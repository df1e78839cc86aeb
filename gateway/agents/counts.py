"""channel-counts: events per channel, counted into a Redis hash exactly once per event.

The built-in example agent. Counting is idempotent: each event id is remembered for a few days
in a per-day set, and a Lua script adds to the count only when the id is new, so an entry
delivered twice (after a crash, a reclaim) is not counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from gateway.agents.runtime import Handler
from gateway.bus import Entry
from gateway.keys import EVENTS, Keys

STREAM = EVENTS
SEEN_TTL = 3 * 86_400

_COUNT_ONCE = """
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    added = added + 1
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return added
"""


def handler(client: aioredis.Redis, keys: Keys) -> Handler:
    script = client.register_script(_COUNT_ONCE)

    async def count(entries: Sequence[Entry]) -> None:
        by_day: dict[str, list[str]] = {}
        for entry in entries:
            for event in entry.events:
                day = event.received_at.date().isoformat()
                by_day.setdefault(day, []).extend((f"{event.site}:{event.event_id}", event.channel))
        for day, args in by_day.items():
            await script(
                keys=[keys.channel_counts(), keys.channel_counts_seen(day)], args=[SEEN_TTL, *args]
            )

    return count


async def read(client: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """The counts so far, by channel."""
    raw: dict[bytes, bytes] = await client.hgetall(keys.channel_counts())  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}
