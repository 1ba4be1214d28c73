"""The daemon's seam onto the simulation: a node with the shape of pghad.nodes.node.Node.

SQL goes over the simulated network from the daemon's host to the server; the driver is either an
agent on the node's host (over the network too, renewing its lease with each heartbeat) or a
driver beside the daemon (like the docker driver) that always sees the server's process.
"""

from __future__ import annotations

import asyncio

import psycopg

from pghad.config.model import NodeConfig
from pghad.decide.observation import (
    ControlData,
    NodeObservation,
    ReplicaInfo,
    ServerState,
    Witness,
)
from pghad.decide.sync_names import render, waited_for
from pghad.errors import NodeError
from pghad.nodes.base import Role
from pghad.nodes.node import with_driver_word
from pghad.testing.sim.agent import Refused, server_state
from pghad.testing.sim.env import POLL_S, Env
from pghad.testing.sim.network import DAEMON
from pghad.testing.sim.server import SimServer

SQL_CONNECT_S = 5.0
PROMOTE_WAIT_S = 30.0
HEARTBEAT_S = 2.0
AGENT_CALL_S = {"start": 120.0, "stop": 60.0, "fence": 30.0, "rewind": 6 * 3600.0}


class SimDriver:
    """The node's process driver: through its agent, or directly (no agent)."""

    def __init__(self, config: NodeConfig, env: Env, holder: str | None, fence_after: float):
        self._node = config
        self.env = env
        self.holder = holder  # None: no agent, the driver sees the server itself
        self.fence_after = fence_after
        self._witness: Witness | None = None
        self._confirmed: float | None = None

    @property
    def node(self) -> NodeConfig:
        return self._node

    @property
    def server(self) -> SimServer:
        return self.env.servers[self._node.name]

    async def _agent(self, call: str, timeout: float, change: bool = True) -> None:
        """Deliver one call to the agent, or raise as AgentDriver does."""
        if self.holder is None:
            return
        name = self._node.name
        if not await self.env.reach(DAEMON, name, timeout):
            raise NodeError(f"agent {name} unreachable: timed out ({call})")
        agent = self.env.agents.get(name)
        if agent is None:
            raise NodeError(f"agent {name} unreachable: connection refused")
        if change and not agent.lease.allows(self.holder, self.env.clock()):
            raise NodeError(f"agent {name}: 409 another pghad holds this agent's lease")

    async def heartbeat(self) -> ServerState:
        assert self.holder is not None
        name = self._node.name
        try:
            await self._agent("heartbeat", HEARTBEAT_S, change=False)
            agent = self.env.agents.get(name)
            assert agent is not None
            try:
                answer = agent.heartbeat(
                    self.holder, self.fence_after, self.server, self.env.clock()
                )
            except Refused as exc:
                raise NodeError(f"agent {name}: another pghad holds the lease") from exc
        except NodeError:
            self._witness = Witness(False, None, self.env.clock())
            raise
        self._confirmed = float(answer["self_fence_after"])
        down = answer["peer"]["down_for_s"]
        fenced = bool(answer["fenced_isolated"])
        serving = bool(answer["serving"])
        self._witness = Witness(True, down, self.env.clock(), self._confirmed, fenced, serving)
        return ServerState(answer["server"])

    def witness(self) -> Witness | None:
        if self.holder is None:
            return None
        return self._witness or Witness(False, None, 0.0)

    async def is_running(self) -> bool:
        return await self.server_state() is ServerState.RUNNING

    async def server_state(self) -> ServerState:
        if self.holder is not None:
            return await self.heartbeat()
        return server_state(self.server)

    async def start(self, role: Role, primary: NodeConfig | None = None) -> None:
        await self._agent("start", AGENT_CALL_S["start"])
        upstream = primary.name if primary else None
        await self.env.hosts.start(self._node.name, role is Role.STANDBY, upstream)

    async def stop(self, mode: str = "fast") -> None:
        await self._agent("stop", AGENT_CALL_S["stop"])
        await self.env.hosts.stop(self._node.name)
        self.env.on_stop(self._node.name, self.env.operator_busy > 0)

    async def fence(self) -> str:
        await self._agent("fence", AGENT_CALL_S["fence"])
        done = self.env.hosts.fence(self._node.name)
        self.env.on_stop(self._node.name, self.env.operator_busy > 0)
        return done

    async def rewind(self, source: NodeConfig) -> None:
        await self._agent("rewind", AGENT_CALL_S["rewind"])
        await self.env.hosts.rewind(self._node.name, source.name)

    async def clone(self, source: NodeConfig) -> None:
        await self._agent("clone", AGENT_CALL_S["rewind"])
        await self.env.hosts.clone(self._node.name, source.name)

    async def checkpoint_lsn(self) -> str:
        await self._agent("checkpoint_lsn", AGENT_CALL_S["fence"], change=False)
        return self.env.hosts.checkpoint_lsn(self._node.name)

    async def control_data(self) -> ControlData:
        await self._agent("control", AGENT_CALL_S["fence"], change=False)
        return self.env.hosts.control_data(self._node.name)


class SimNode:
    def __init__(self, config: NodeConfig, env: Env, driver: SimDriver) -> None:
        self.config = config
        self.env = env
        self.process = driver

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def server(self) -> SimServer:
        return self.env.servers[self.config.name]

    async def _connect(self, timeout: float) -> SimServer:
        """A session on the server over the network, or psycopg's error."""
        clock = self.env.clock
        deadline = clock() + timeout
        if not await self.env.reach(DAEMON, self.name, timeout):
            raise psycopg.OperationalError(f"{self.name}: timeout expired")
        server = self.server
        while server.frozen and clock() < deadline:
            await asyncio.sleep(min(POLL_S, deadline - clock()))
        if server.frozen:
            raise psycopg.OperationalError(f"{self.name}: timeout expired")
        if not server.running:
            raise psycopg.OperationalError(f"{self.name}: connection refused")
        if server.refusing:
            raise psycopg.OperationalError(f"{self.name}: pg_hba.conf rejects connection")
        return server

    async def probe(self, timeout: float) -> NodeObservation:
        return await with_driver_word(self._probe(timeout), self.process, timeout)

    async def _probe(self, timeout: float) -> NodeObservation:
        try:
            server = await self._connect(timeout)
        except psycopg.OperationalError as exc:
            return NodeObservation(self.name, False, error=str(exc))
        now = self.env.clock()
        replicas = tuple(
            ReplicaInfo(
                other.name,
                "streaming",
                "sync" if other.name in waited_for(server.sync_names) else "async",
                other.lsn,
                other.lsn,
                0.0,
            )
            for other in self.env.servers.values()
            if other.streaming_from == self.name and not server.in_recovery
        )
        standby = server.in_recovery
        return NodeObservation(
            self.name,
            True,
            in_recovery=standby,
            timeline=server.timeline,
            current_lsn=None if standby else server.lsn,
            receive_lsn=server.lsn if standby else None,
            replay_lsn=server.lsn if standby else None,
            replay_lag_s=0.0 if standby else None,
            sync_standby_names=server.sync_names,
            read_only=server.read_only,
            replicas=replicas,
            receiver_status="streaming" if server.streaming_from else None,
            receiver_msg_age_s=server.receiver_age(now),
        )

    async def promote(self, archive: bool = False) -> bool:
        server = await self._connect(SQL_CONNECT_S)
        server.sync_names = render(None, archive)
        if not server.in_recovery:
            raise psycopg.errors.ObjectNotInPrerequisiteState("recovery is not in progress")
        operator = self.env.operator_busy > 0
        self.env.on_promote(self.name, operator)
        job = self.env.hosts.job(server, "promote", self.env.timings.promote, operator=operator)
        try:
            await asyncio.wait_for(asyncio.shield(job.done), PROMOTE_WAIT_S)
        except TimeoutError:
            return False
        return not server.in_recovery

    async def set_synchronous(self, standby: str | None, archive: bool = False) -> None:
        server = await self._connect(SQL_CONNECT_S)
        server.sync_names = render(standby, archive)
        if standby is None:
            server.relaxes += 1

    async def make_read_only(self) -> None:
        server = await self._connect(SQL_CONNECT_S)
        server.read_only = True

    async def checkpoint(self) -> None:
        await self._connect(SQL_CONNECT_S)
