"""Running the collector's chain in tests: each agent until its group has nothing left."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from gateway import keys as K
from gateway.agents import AGENTS, AgentContext
from gateway.agents.runtime import Agent, Backoff, Handler
from gateway.bus import Bus
from gateway.config import Config
from gateway.datamart.records import SessionRecord
from gateway.datamart.sessions import unpack_records
from gateway.events import Event, unpack
from tests.helpers import eventually

CHAIN = ("filter", "sessions", "identity", "profile")
FAST = Backoff(base=0.001, cap=0.01)
#: A fixed day, so midnights and time zones are known (a Monday, UTC).
DAY = datetime(2024, 3, 4, tzinfo=UTC)
COLLECTOR = "[collector]\ntick_interval = 3600.0"
BUS = "[bus]\nmax_deliveries = 3\nclaim_idle = 30.0\nblock = 0.02"


def at(minutes: float, day: datetime = DAY) -> datetime:
    return day + timedelta(minutes=minutes)


def ev(event_id: str, minutes: float = 0.0, **fields: Any) -> Event:
    """An event of site demo at ``minutes`` after DAY (a page view of visitor a1 by default)."""
    values: dict[str, Any] = {
        "event_id": event_id,
        "type": "page",
        "channel": "web",
        "site": "demo",
        "timestamp": at(minutes),
        "received_at": at(minutes),
        "anonymous_id": "a1",
    }
    values.update(fields)
    return Event(**values)


class Chain:
    """The four collector agents over one bus; handlers (and their figures) live across runs."""

    def __init__(self, config: Config, client: aioredis.Redis, bus: Bus) -> None:
        self.config = config
        self.client = client
        self.bus = bus
        self.keys = bus.keys
        self.ctx = AgentContext(config, client, bus.keys, bus)
        self.handlers: dict[str, Handler] = {name: AGENTS[name].make(self.ctx) for name in CHAIN}

    def handler(self, name: str) -> Any:
        return self.handlers[name]

    async def publish(self, *batches: list[Event]) -> None:
        await self.bus.publish_many(K.EVENTS, list(batches))

    async def run(self, *names: str) -> None:
        """Run each agent (all four by default, in chain order) until its group is drained."""
        for name in names or CHAIN:
            stream = AGENTS[name].stream
            agent = Agent(name, self.handlers[name], self.bus, stream=stream, backoff=FAST)
            task = asyncio.create_task(agent.run())
            try:
                await eventually(lambda s=stream, n=name: self.drained(s, n), within=20)
            finally:
                agent.stop()
                await asyncio.wait_for(task, 10)
            assert agent.stats.dead_lettered == 0, agent.stats.last_error

    async def drained(self, stream: str, group: str) -> bool:
        key = self.keys.stream(stream)
        if not await self.client.exists(key):
            return False
        for info in await self.client.xinfo_groups(key):
            name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
            if name == group:
                return bool(int(info["pending"]) == 0 and await self.bus._lag(key, info) == 0)
        return False

    async def replay(self, *names: str) -> None:
        """Deliver every entry of these agents' streams again (as after a crash)."""
        for name in names:
            await self.client.xgroup_setid(self.keys.stream(AGENTS[name].stream), name, "0")

    async def events(self, stream: str) -> list[Event]:
        rows = await self.client.xrange(self.keys.stream(stream))
        return [e for _, fields in rows for e in unpack(fields[K.ENTRY_FIELD])]

    async def records(self) -> list[SessionRecord]:
        rows = await self.client.xrange(self.keys.stream(K.SESSIONS))
        return [r for _, fields in rows for r in unpack_records(fields[K.ENTRY_FIELD])]

    async def sessions_by_id(self) -> dict[str, SessionRecord]:
        """The latest record per session (the one with the most events)."""
        best: dict[str, SessionRecord] = {}
        for record in await self.records():
            kept = best.get(record.session_id)
            if kept is None or record.events >= kept.events:
                best[record.session_id] = record
        return best


def by_id(events: list[Event]) -> dict[str, Event]:
    return {e.event_id: e for e in events}


async def flush(chain: Chain, after: timedelta = timedelta(hours=1)) -> int:
    """Close every open session as if ``after`` went by on the wall clock."""
    sessions: Any = chain.handler("sessions")
    now = int((datetime.now(UTC) + after).timestamp() * 1000)
    closed: int = await sessions.flush_idle(now_ms=now)
    return closed


Check = Callable[[], Any]
