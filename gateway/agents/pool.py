"""Run several agents as supervised tasks in one process (``serve`` and ``agent NAME``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from gateway.agents import AGENTS, AgentContext, collector
from gateway.agents.runtime import Agent
from gateway.errors import ConfigError

log = logging.getLogger(__name__)


def check(names: Iterable[str], source: str, key: str = "agents.run") -> None:
    """ConfigError unless ``names`` are agents that can run together."""
    names = list(names)
    if "collector" in names and (both := [n for n in collector.STEPS if n in names]):
        raise ConfigError(
            source,
            key,
            f"collector runs {', '.join(collector.STEPS)} itself; "
            f"name it or them, not both (also named: {', '.join(both)})",
        )
    for name in names:
        if name not in AGENTS:
            raise ConfigError(
                source, key, f"no agent {name!r} (known: {', '.join(sorted(AGENTS))})"
            )


def build(names: Iterable[str], ctx: AgentContext) -> list[Agent]:
    names = list(names)
    check(names, ctx.config.source)
    return [Agent(n, AGENTS[n].make(ctx), ctx.bus, stream=AGENTS[n].stream) for n in names]


class AgentPool:
    """Agents as tasks; one whose loop dies of a bug is logged and started again."""

    def __init__(self, agents: list[Agent]) -> None:
        self.agents = agents
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._keep_running(agent), name=f"agent-{agent.name}")
            for agent in self.agents
        ]

    async def _keep_running(self, agent: Agent) -> None:
        while True:
            try:
                await agent.run()
                return
            except Exception:
                log.exception("agent %s: loop crashed; starting it again", agent.name)
                await asyncio.sleep(1.0)

    async def stop(self, grace: float = 30.0) -> None:
        """Let each agent finish its batch in hand; cancel what still runs after ``grace`` s."""
        for agent in self.agents:
            agent.stop()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            log.error("%s did not stop within %.0f s; cancelling it", task.get_name(), grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)

    @property
    def all_running(self) -> bool:
        return all(agent.running for agent in self.agents)
