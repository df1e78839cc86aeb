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


def build(names: Iterable[str], ctx: AgentContext) -> list[Agent]:
    names = list(names)
    if "collector" in names and (both := [n for n in collector.STEPS if n in names]):
        raise ConfigError(
            ctx.config.source,
            "agents.run",
            f"collector runs {', '.join(collector.STEPS)} itself; "
            f"name it or them, not both (also named: {', '.join(both)})",
        )
    agents = []
    for name in names:
        spec = AGENTS.get(name)
        if spec is None:
            known = ", ".join(sorted(AGENTS))
            raise ConfigError(
                ctx.config.source, "agents.run", f"no agent {name!r} (known: {known})"
            )
        agents.append(Agent(name, spec.make(ctx), ctx.bus, stream=spec.stream))
    return agents


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
