"""channel-counts: events per channel, counted into Redis exactly once per event: in all, and
per minute of arrival for the last two hours (the dashboard's live chart).

Counting is idempotent: each event id is remembered for a few days
in a per-day set, and a Lua script adds to the count only when the id is new, so an entry
delivered twice (after a crash, a reclaim) is not counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.agents.runtime import Handler
from gateway.bus import Entry
from gateway.errors import BusUnavailable
from gateway.keys import EVENTS, Keys

STREAM = EVENTS
SEEN_TTL = 3 * 86_400
MINUTES_KEPT = 120

_COUNT_ONCE = """
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], 1)
    redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1)
    added = added + 1
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return added
"""


def handler(client: aioredis.Redis, keys: Keys) -> Handler:
    script = client.register_script(_COUNT_ONCE)

    async def count(entries: Sequence[Entry]) -> None:
        by_minute: dict[int, list[str]] = {}
        for entry in entries:
            for event in entry.events:
                minute = int(event.received_at.timestamp()) // 60
                member = f"{event.site}:{event.event_id}"
                by_minute.setdefault(minute, []).extend((member, event.channel))
        for minute, args in by_minute.items():
            day = datetime.fromtimestamp(minute * 60, UTC).date().isoformat()
            await script(
                keys=[
                    keys.channel_counts(),
                    keys.channel_counts_seen(day),
                    keys.channel_counts_minute(minute),
                ],
                args=[SEEN_TTL, MINUTES_KEPT * 60, *args],
            )

    return count


async def per_minute(
    client: aioredis.Redis, keys: Keys, minutes: int, now: float | None = None
) -> list[tuple[int, dict[str, int]]]:
    """Events per channel for each of the last ``minutes`` minutes (epoch minute, counts)."""
    last = int((now if now is not None else time.time()) // 60)
    span = range(last - minutes + 1, last + 1)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for minute in span:
                pipe.hgetall(keys.channel_counts_minute(minute))
            replies = await pipe.execute()
    except (RedisError, OSError) as exc:
        raise BusUnavailable(f"channel counts: {exc}") from exc
    return [
        (minute, {k.decode(): int(v) for k, v in reply.items()})
        for minute, reply in zip(span, replies, strict=True)
    ]


async def read(client: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """The counts so far, by channel."""
    raw: dict[bytes, bytes] = await client.hgetall(keys.channel_counts())  # type: ignore[assignment]
    return {k.decode(): int(v) for k, v in raw.items()}
