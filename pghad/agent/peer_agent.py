"""The agent's view of the other host's agent: whether that host answers, and whether it still
reaches this node's server. A peer whose server is stopped but whose host answers and vouches for
this node is not silent: a healthy primary does not fence itself because its standby's server
was stopped while the daemon was away."""

from __future__ import annotations

import asyncio
import time

from pghad.agent.watch import Answer
from pghad.errors import NodeError
from pghad.nodes.agent import AgentClient
from pghad.nodes.agent_api import Health


class PeerAgentWatch:
    """Asks the peer's agent (`GET /health`) every interval; an answer counts only when it says
    it reaches this node's server."""

    def __init__(self, client: AgentClient, interval: float, timeout: float) -> None:
        self.client = client
        self.interval = interval
        self.timeout = timeout
        self.answer = Answer(answered_at=time.monotonic())  # silent since start until it answers

    async def run(self) -> None:
        while True:
            await self._once()
            await asyncio.sleep(self.interval)

    async def _once(self) -> None:
        try:
            health = await self.client.call("GET", "/health", Health, timeout=self.timeout)
        except NodeError as exc:
            self.answer.error = str(exc)
            return
        if not health.peer_reachable:
            self.answer.error = "its agent answers but does not reach this node's server"
            return
        self.answer = Answer(row=health.model_dump(), answered_at=time.monotonic(), ever=True)
