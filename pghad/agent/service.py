"""The agent's state: its node's driver, its two watches, the lease, and self-fencing."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from pghad.agent.contact import ContactFile, contact_path
from pghad.agent.guard import (
    ISOLATED,
    daemon_silence,
    fence_reason,
    heartbeat_chance,
    peer_silence,
    server_back,
)
from pghad.agent.lease import Lease
from pghad.agent.peer_agent import PeerAgentWatch
from pghad.agent.watch import LOCAL_QUERY, PEER_QUERY, Watch
from pghad.config.model import AgentNodeConfig, Config, LocalNodeConfig, NodeConfig
from pghad.decide.observation import STREAMING, ServerState
from pghad.errors import ConfigError
from pghad.nodes.agent import AgentClient
from pghad.nodes.agent_api import PeerView
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin

log = structlog.get_logger("pghad.agent")


def local_config(node: NodeConfig) -> LocalNodeConfig:
    """The node as its own host runs it: the server listens on `listen` (default: host)."""
    if isinstance(node, AgentNodeConfig):
        return LocalNodeConfig(
            name=node.name,
            host=node.listen_address,
            port=node.port,
            user=node.user,
            dbname=node.dbname,
            data_dir=node.data_dir,
            socket_dir=node.socket_dir,
        )
    if isinstance(node, LocalNodeConfig):
        return node
    raise ConfigError(f"node {node.name} uses the {node.driver} driver: no agent runs it")


class AgentService:
    def __init__(self, config: Config, node_name: str) -> None:
        names = [n.name for n in config.nodes]
        if node_name not in names:
            raise ConfigError(f"agent node {node_name!r} is not one of the nodes {names}")
        self.config = config
        self.node = config.node(node_name)
        self.peer = config.other(node_name)
        bin_dir = pgbin.find_bin_dir(config.pg_bin)
        self.driver = LocalDriver(local_config(self.node), config.auth, bin_dir)
        interval, timeout = config.agent.peer_interval, config.cluster.probe_timeout
        agent = config.agent
        self.local = Watch(self.node, config.auth, LOCAL_QUERY, interval, timeout)
        self.peer_watch = Watch(self.peer, config.auth, PEER_QUERY, interval, timeout)
        self.peer_agent = (
            PeerAgentWatch(
                # /health needs no token: none is sent to the other host.
                AgentClient(self.peer.agent_url, "", agent.ca_file, "", agent.plain_http),
                interval,
                timeout,
            )
            if isinstance(self.peer, AgentNodeConfig)
            else None
        )
        self.lease = Lease()
        self.started_at = time.monotonic()
        self.contact = ContactFile(contact_path(config.agent.run_dir, self.node))
        before = self.contact.load()
        self.lease.renewed_at = before.get("daemon")
        self.peer_heard_before = before.get("peer")
        for watch in (self.peer_watch, self.peer_agent):
            if watch is not None and self.peer_heard_before is not None:
                watch.answer.answered_at = self.peer_heard_before
                watch.answer.asked_since = self.started_at
        self.self_fenced: str | None = None
        self.fenced_isolated = False  # fenced for want of the daemon and peer, not superseded
        self._fenced_at = 0.0
        self.self_fence_after = config.self_fence_after  # until the daemon's first heartbeat
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        jobs = [self.local.run(), self.peer_watch.run(), self._guard()]
        if self.peer_agent is not None:
            jobs.append(self.peer_agent.run())
        for job in jobs:
            self._tasks.append(asyncio.create_task(job))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- what the node is --------------------------------------------------------------

    @property
    def writable(self) -> bool:
        answer = self.local.answer
        row = answer.row
        return answer.error is None and row is not None and not row["in_recovery"]

    def serving(self, now: float) -> bool:
        """A writable primary whose local check answers in time (not hung, not frozen)."""
        interval = self.config.agent.peer_interval
        return self.writable and self.local.answer.silent_for(now, interval) is None

    @property
    def streaming_replica(self) -> bool:
        answer, row = self.local.answer, self.local.answer.row
        return (
            answer.error is None
            and row is not None
            and row["in_recovery"]
            and (row["receiver_status"] == STREAMING)
        )

    async def server_state(self) -> ServerState:
        return await self.driver.server_state()

    def peer_view(self, now: float) -> PeerView:
        answer = self.peer_watch.answer
        silent = answer.silent_for(now, self.config.agent.peer_interval)
        return PeerView(
            name=self.peer.name,
            reachable=answer.ever and silent is None,
            down_for_s=round(silent, 3) if silent is not None else None,
            error=answer.error,
        )

    # ---- self-fencing ----------------------------------------------------------------------

    def follow_timing(self, self_fence_after: float) -> None:
        """Fence on the timing of the daemon that decides failover (its threshold may have been
        changed and reloaded since this agent read its own config)."""
        if self_fence_after != self.self_fence_after:
            log.info(
                "self_fence_timing",
                node=self.node.name,
                self_fence_after=self_fence_after,
                was=self.self_fence_after,
            )
            self.self_fence_after = self_fence_after

    def daemon_silent_for(self, now: float) -> float:
        chance = heartbeat_chance(self.config.cluster.probe_interval)
        return daemon_silence(self.lease.renewed_at, self.started_at, now, chance)

    def peer_silent_for(self, now: float) -> float | None:
        agent = self.peer_agent.answer if self.peer_agent is not None else None
        return peer_silence(self.peer_watch.answer, agent, now, self.config.agent.peer_interval)

    def _peer_heard_at(self) -> float | None:
        answers = [w.answer for w in (self.peer_watch, self.peer_agent) if w is not None]
        heard = [a.answered_at for a in answers if a.ever and a.answered_at is not None]
        return max(heard, default=self.peer_heard_before)

    async def _guard(self) -> None:
        while True:
            await asyncio.sleep(self.config.agent.peer_interval)
            now = time.monotonic()
            daemon = self.daemon_silent_for(now)
            peer = self.peer_silent_for(now)
            self.contact.save(self.lease.renewed_at, self._peer_heard_at())
            if self.self_fenced is None and self.writable:
                why = fence_reason(
                    self.local.answer,
                    self.peer_watch.answer,
                    daemon_silent=daemon,
                    peer_silent=peer,
                    after=self.self_fence_after,
                    now=now,
                    interval=self.config.agent.peer_interval,
                )
                if why is not None:
                    await self._fence(why, daemon, peer)
            elif self.self_fenced is not None and server_back(self.local.answer, self._fenced_at):
                # Kept until the server runs again: the daemon reads it to tell a precaution
                # (start it again when no promotion happened) from a crash.
                self.self_fenced = None

    async def _fence(self, why: str, daemon: float, peer: float | None) -> None:
        self._fenced_at = time.monotonic()
        detail = await self.driver.fence()
        self.self_fenced = detail
        self.fenced_isolated = why == ISOLATED
        log.warning(
            "self_fenced",
            node=self.node.name,
            detail=detail,
            reason=why,
            daemon_silent_s=round(daemon, 1),
            peer_silent_s=round(peer or 0.0, 1),
        )
