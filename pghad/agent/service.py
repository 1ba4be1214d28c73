"""The agent's state: its node's driver, its two watches, the lease, and self-fencing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from pghad import pgbin
from pghad.cluster.observation import ServerState
from pghad.config import AgentNodeConfig, Config, LocalNodeConfig, NodeConfig
from pghad.errors import ConfigError
from pghad.nodes.local import LocalDriver

from .lease import Lease
from .watch import LOCAL_QUERY, PEER_QUERY, Watch

log = structlog.get_logger("pghad.agent")


def should_self_fence(
    writable: bool, daemon_silent: float | None, peer_silent: float | None, after: float
) -> bool:
    """A primary that has lost both the daemon and its standby (each heard from before) for
    `after` seconds stops taking writes; losing only one of them never fences."""
    return (
        writable
        and daemon_silent is not None
        and daemon_silent >= after
        and peer_silent is not None
        and peer_silent >= after
    )


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
        self.local = Watch(self.node, config.auth, LOCAL_QUERY, interval, timeout)
        self.peer_watch = Watch(self.peer, config.auth, PEER_QUERY, interval, timeout)
        self.lease = Lease()
        self.self_fenced: str | None = None
        self.self_fence_after = config.self_fence_after  # until the daemon's first heartbeat
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for job in (self.local.run(), self.peer_watch.run(), self._guard()):
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

    @property
    def streaming_replica(self) -> bool:
        answer, row = self.local.answer, self.local.answer.row
        return (
            answer.error is None
            and row is not None
            and row["in_recovery"]
            and (row["receiver_status"] == "streaming")
        )

    async def server_state(self) -> ServerState:
        return await self.driver.server_state()

    def peer_view(self, now: float) -> dict[str, Any]:
        answer = self.peer_watch.answer
        silent = answer.silent_for(now, self.config.agent.peer_interval)
        return {
            "name": self.peer.name,
            "reachable": answer.ever and silent is None,
            "down_for_s": round(silent, 3) if silent is not None else None,
            "error": answer.error,
        }

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

    async def _guard(self) -> None:
        while True:
            await asyncio.sleep(self.config.agent.peer_interval)
            after = self.self_fence_after
            now = time.monotonic()
            daemon = self.lease.silent_for(now)
            answer = self.peer_watch.answer
            peer = answer.silent_for(now, self.config.agent.peer_interval) if answer.ever else None
            if self.self_fenced is None and should_self_fence(self.writable, daemon, peer, after):
                detail = await self.driver.fence()
                self.self_fenced = detail
                log.warning(
                    "self_fenced",
                    node=self.node.name,
                    detail=detail,
                    daemon_silent_s=round(daemon or 0.0, 1),
                    peer_silent_s=round(peer or 0.0, 1),
                )
            elif self.self_fenced is not None and daemon is not None and daemon < after:
                self.self_fenced = None  # the daemon is back: it decides what the node becomes
