"""What the simulated processes share: the servers, the network, the hosts' tools, the agents."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from pghad.testing.sim.agent import SimAgent
from pghad.testing.sim.hostops import Hosts
from pghad.testing.sim.network import Network
from pghad.testing.sim.server import SimServer, Timings

POLL_S = 0.1


@dataclass
class Env:
    servers: dict[str, SimServer]
    net: Network
    hosts: Hosts
    timings: Timings
    clock: Callable[[], float]
    agents: dict[str, SimAgent | None] = field(default_factory=dict)
    operator_busy: int = 0  # operator requests under way (their promotions are not failovers)
    on_promote: Callable[[str, bool], None] = lambda node, operator: None
    # The daemon's driver stopped or fenced a server (during an operator's request: `operator`).
    on_stop: Callable[[str, bool], None] = lambda node, operator: None

    async def reach(self, src: str, dst: str, timeout: float) -> bool:
        """Wait until a request from `src` gets an answer from `dst` (TCP retries through loss
        and a healed cut), or `timeout` passes; True when it did."""
        deadline = self.clock() + timeout
        while True:
            trip = self.net.round_trip(src, dst)
            now = self.clock()
            if trip is not None and now + trip <= deadline:
                await asyncio.sleep(trip)
                return True
            if now + POLL_S > deadline:
                await asyncio.sleep(max(0.0, deadline - now))
                return False
            await asyncio.sleep(POLL_S)
