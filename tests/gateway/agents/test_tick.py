"""The runtime's periodic tick, the identity agent finishing an interrupted merge, script errors."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gateway import keys as K
from gateway.agents.runtime import Agent, Ticking
from gateway.bus import Bus, Entry
from gateway.datamart import identity
from gateway.datamart.identifiers import identifiers_of
from gateway.datamart.lua import Script, execute
from gateway.datamart.profiles import find_customer, get_profile
from gateway.datamart.sessions import ms
from gateway.errors import ScriptError
from tests.gateway.agents.chain import FAST, Chain
from tests.gateway.agents.test_identity import pos_visit, web_visit
from tests.helpers import eventually


class Chores:
    """A handler with a tick that fails once."""

    tick_interval = 0.05

    def __init__(self) -> None:
        self.ticks = 0
        self.batches = 0

    async def __call__(self, entries: Sequence[Entry]) -> None:
        self.batches += 1

    async def tick(self) -> None:
        self.ticks += 1
        if self.ticks == 2:
            raise ValueError("chore failed")


async def test_a_ticking_handler_ticks_at_start_then_every_interval(chain: Chain) -> None:
    chores = Chores()
    agent = Agent("chores", chores, chain.bus, stream=K.EVENTS, backoff=FAST)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: chores.ticks >= 4)  # a failing tick does not stop the loop
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
    assert agent.stats.errors >= 1 and "chore failed" in agent.stats.last_error
    assert isinstance(chores, Ticking) and not isinstance(Chain.run, Ticking)


async def test_the_identity_tick_finishes_a_merge_a_crash_interrupted(chain: Chain) -> None:
    web, pos = web_visit(), pos_visit()
    await chain.publish(*web, pos[1])
    await chain.run()
    card = await find_customer(chain.client, chain.keys, "demo", "loyalty_card", "L-4242")
    # the identity agent resolves the linking identify, then dies before folding the profiles
    (linking,) = pos[0]
    item = identity.payload(
        "demo", linking.event_id, linking.type, ms(linking.timestamp), identifiers_of(linking)
    )
    command = identity.resolve_command(chain.keys, "demo", [item], 3, 50)
    reply = (await execute(chain.bus, [identity.RESOLVE.load(), command]))[1]
    ((merged, survivor, at),) = identity.parse_resolution(reply).merges
    assert at == 0  # the first (only) event merged them
    assert merged == card
    assert await chain.client.smembers(chain.keys.pending_folds("demo")) == {
        f"{merged} {survivor}".encode()
    }
    before = await get_profile(chain.client, chain.keys, survivor)
    assert before is not None and before.counters.orders == 0  # the sale is still on the card
    await chain.handler("identity").tick()
    after = await get_profile(chain.client, chain.keys, survivor)
    assert after is not None and after.counters.orders == 1 and after.merged_from == [card]
    assert not await chain.client.exists(chain.keys.pending_folds("demo"))


async def test_a_failing_script_is_not_mistaken_for_redis_being_away(chain: Chain) -> None:
    broken = Script("return redis.call('HINCRBY', KEYS[1], 'f', 'not a number')")
    bus: Bus = chain.bus
    with pytest.raises(ScriptError, match="user_script"):
        await execute(bus, [broken.load(), broken.call([chain.keys.profile("c_x", "p")], [])])
