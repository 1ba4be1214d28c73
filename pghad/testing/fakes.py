"""Test helpers shipped with pghad: an in-memory cluster of fake nodes and a manual clock.

FakeNode has the shape of pghad.nodes.node.Node (probe, SQL actions, `process`), so the daemon's
loop, procedures and executor run against it in milliseconds. It models what the decisions read
(roles, timelines, streaming, synchronous names, server state) and records every call; it is a
model for testing the logic, not a stand-in for PostgreSQL in tests of the drivers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from pghad.config.model import AuthConfig, Config, NodeConfig
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


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeNode:
    config: NodeConfig
    cluster: FakeCluster
    auth: AuthConfig = field(default_factory=AuthConfig)
    in_recovery: bool = True
    running: bool = True
    has_data: bool = True
    reachable: bool = True  # over SQL, from pghad
    observable: bool = True  # its host answers pghad (the driver can tell its state)
    timeline: int = 1
    lsn: int = 1000
    sync_names: str = ""
    upstream: str | None = None
    start_fails: bool = False
    replay_lag_s: float = 0.0
    witness_view: Witness | None = None  # an agent's view of the other node (None: no agent)
    calls: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def process(self) -> FakeNode:
        return self

    @property
    def node(self) -> NodeConfig:
        return self.config

    # ---- observation ------------------------------------------------------------------------

    def streaming_to(self, primary: FakeNode) -> bool:
        return (
            self.running
            and self.in_recovery
            and self.upstream == primary.name
            and primary.running
            and not primary.in_recovery
            and self.timeline == primary.timeline
            and frozenset((self.name, primary.name)) not in self.cluster.cut_links
        )

    async def probe(self, timeout: float) -> NodeObservation:
        server = await self.server_state()
        if not (self.running and self.reachable):
            control = None
            if server is ServerState.STOPPED:
                control = await self.control_data()
            return NodeObservation(
                self.name, False, error="connection refused", server=server, control=control
            )
        replicas: tuple[ReplicaInfo, ...] = ()
        receiver = None
        if not self.in_recovery:
            replicas = tuple(
                ReplicaInfo(
                    s.name,
                    "streaming",
                    "sync" if s.name in waited_for(self.sync_names) else "async",
                    s.lsn,
                    s.lsn,
                    0.0,
                )
                for s in self.cluster.nodes.values()
                if s is not self and s.streaming_to(self)
            )
        elif self.upstream and self.streaming_to(self.cluster.nodes[self.upstream]):
            receiver = "streaming"
        return NodeObservation(
            self.name,
            True,
            in_recovery=self.in_recovery,
            timeline=self.timeline,
            current_lsn=None if self.in_recovery else self.lsn,
            receive_lsn=self.lsn if self.in_recovery else None,
            replay_lsn=self.lsn if self.in_recovery else None,
            replay_lag_s=self.replay_lag_s if self.in_recovery else None,
            sync_standby_names=self.sync_names,
            replicas=replicas,
            receiver_status=receiver,
            receiver_msg_age_s=5.0 if receiver else None,
            server=server,
            witness=self.witness_view,
        )

    # ---- SQL actions ------------------------------------------------------------------------

    def _sql(self, call: str) -> None:
        self.calls.append(call)
        if not (self.running and self.reachable):
            raise psycopg.OperationalError(f"{self.name}: connection refused")

    async def promote(self, archive: bool = False) -> bool:
        self._sql("promote")
        self.in_recovery, self.upstream = False, None
        self.sync_names = render(None, archive)
        self.timeline += 1
        return True

    async def set_synchronous(self, standby: str | None, archive: bool = False) -> None:
        self._sql(f"set_synchronous {standby}" + (" +archive" if archive else ""))
        self.sync_names = render(standby, archive)

    async def make_read_only(self) -> None:
        self._sql("make_read_only")
        self.running = False

    async def checkpoint(self) -> None:
        self._sql("checkpoint")

    # ---- process actions (the driver) -------------------------------------------------------

    def _host(self, call: str) -> None:
        self.calls.append(call)
        if not self.observable:
            raise NodeError(f"{self.name}: host unreachable")

    def witness(self) -> Witness | None:
        return self.witness_view

    async def server_state(self) -> ServerState:
        if not self.observable:
            return ServerState.UNKNOWN
        if self.running:
            return ServerState.RUNNING
        return ServerState.STOPPED if self.has_data else ServerState.NO_DATA

    async def is_running(self) -> bool:
        return self.running

    async def start(self, role: Role, primary: NodeConfig | None = None) -> None:
        self._host(f"start {role.value}")
        if self.start_fails or not self.has_data:
            raise NodeError(f"{self.name}: the server did not start")
        self.running = True
        self.in_recovery = role is Role.STANDBY
        self.upstream = primary.name if primary else None

    async def stop(self, mode: str = "fast") -> None:
        self._host(f"stop {mode}")
        if self.running and not self.in_recovery:
            # The shutdown checkpoint reaches every standby that streams from this primary.
            self.lsn += 100
            for other in self.cluster.nodes.values():
                if other is not self and other.streaming_to(self):
                    other.lsn = self.lsn
        self.running = False

    async def fence(self) -> str:
        self._host("fence")
        was = self.running
        self.running = False
        return "immediate shutdown" if was else "not running"

    async def rewind(self, source: NodeConfig) -> None:
        self._host("rewind")
        if not self.has_data:
            raise NodeError(f"{self.name}: no data directory")
        self._copy(self.cluster.nodes[source.name])

    async def clone(self, source: NodeConfig) -> None:
        self._host("clone")
        self.has_data = True
        self.start_fails = False
        self._copy(self.cluster.nodes[source.name])

    def _copy(self, source: FakeNode) -> None:
        self.timeline, self.lsn, self.sync_names = source.timeline, source.lsn, source.sync_names

    async def control_data(self) -> ControlData:
        if not self.observable or self.running or not self.has_data:
            raise NodeError(f"{self.name}: pg_control cannot be read")
        state = "shut down in recovery" if self.in_recovery else "shut down"
        return ControlData(state, self.timeline, self.lsn)

    async def checkpoint_lsn(self) -> str:
        self._host("checkpoint_lsn")
        return f"0/{self.lsn - 50:X}"  # where the shutdown checkpoint record starts


@dataclass
class FakeCluster:
    """Two fake nodes, `primary` streaming synchronously to `standby`."""

    config: Config
    nodes: dict[str, FakeNode] = field(default_factory=dict)
    cut_links: set[frozenset[str]] = field(default_factory=set)

    @classmethod
    def of(cls, config: Config) -> FakeCluster:
        cluster = cls(config)
        first, second = config.nodes
        cluster.nodes[first.name] = FakeNode(
            first, cluster, config.auth, in_recovery=False, sync_names=f'"{second.name}"'
        )
        cluster.nodes[second.name] = FakeNode(second, cluster, config.auth, upstream=first.name)
        return cluster

    def nodes_for(self, config: Config) -> dict[str, FakeNode]:
        """The node factory for a Daemon: the same nodes, with the (reloaded) settings."""
        for node in config.nodes:
            self.nodes[node.name].config = node
            self.nodes[node.name].auth = config.auth
        return dict(self.nodes)

    def calls(self, node: str, prefix: str) -> int:
        return sum(call.startswith(prefix) for call in self.nodes[node].calls)


def scratch_config_text(state_dir: Path, cluster: str, nodes: str) -> str:
    """A config whose state lives in `state_dir`, with no Redis to reach and no backup calendar:
    `cluster` holds the [cluster] table's lines, `nodes` the [[nodes]] tables (and any after)."""
    return f"""
[cluster]
{cluster}

[redis]
url = "redis://127.0.0.1:1/0"

[backup]
schedule = false
dir = "{state_dir / "backups"}"

[state]
dir = "{state_dir}"
{nodes}"""


def fake_config_text(state_dir: Path, extra: str = "", cluster: str = "") -> str:
    """A config for a fake cluster: two nodes a and b, threshold 2 s, state in `state_dir`.

    `cluster` adds lines to [cluster]; `extra` adds tables at the end.
    """
    settings = f"failover_threshold = 2.0\nsync_relax_after = 3.0\nprobe_interval = 1.0\n{cluster}"
    nodes = f"""
[[nodes]]
name = "a"
port = 1
data_dir = "/nonexistent/a"

[[nodes]]
name = "b"
port = 2
data_dir = "/nonexistent/b"
{extra}
"""
    return scratch_config_text(state_dir, settings, nodes)
