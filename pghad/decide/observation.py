"""What one probe round saw: frozen snapshots the decision function reads and never mutates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pghad.decide.sync_names import waited_for


def parse_lsn(text: str | None) -> int | None:
    """'16/B374D848' -> byte position."""
    if text is None:
        return None
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def format_lsn(value: int | None) -> str | None:
    return None if value is None else f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


class ServerState(StrEnum):
    """The node's server process as its driver sees it (not over SQL)."""

    RUNNING = "running"
    FROZEN = "frozen"  # the postmaster exists but is stopped (SIGSTOP) or the container paused
    STOPPED = "stopped"
    NO_DATA = "no_data"  # no usable data directory: only a clone brings it back
    UNKNOWN = "unknown"  # the driver could not tell (host unreachable, timeout)


@dataclass(frozen=True)
class Witness:
    """What a node's own host (its agent) sees of the other node: the second witness before a
    failover. Drivers without an agent report none."""

    available: bool  # the agent answered this round
    primary_down_for_s: float | None  # None: it reaches the other node now
    at: float = 0.0
    # The self-fence timing the agent confirmed in this answer (the daemon's memory keeps it).
    self_fence_after: float | None = None
    # The agent stopped its primary for want of the daemon and peer (a precaution; not when
    # it stopped it for the other node being a primary on a newer timeline).
    self_fenced: bool = False
    # The agent's own SQL check of its server answers in time, as a writable primary: the server
    # is alive and reachable from its own host (whatever pghad's connections meet).
    serving: bool = False


# pg_controldata's "Database cluster state" of a server that stopped while in recovery (cleanly,
# or killed) and of one that stopped as a primary (cleanly, killed, or during crash recovery).
STOPPED_IN_RECOVERY = frozenset({"shut down in recovery", "in archive recovery"})
STOPPED_AS_PRIMARY = frozenset({"shut down", "in production", "in crash recovery"})


@dataclass(frozen=True)
class ControlData:
    """A stopped server's own evidence, from its pg_control (pg_controldata): how it stopped,
    and its timeline (the later of the latest checkpoint's and the minimum recovery point's)."""

    state: str
    timeline: int | None
    checkpoint_lsn: int | None = None

    @property
    def was_standby(self) -> bool:
        return self.state in STOPPED_IN_RECOVERY

    @property
    def was_primary(self) -> bool:
        return self.state in STOPPED_AS_PRIMARY


def parse_controldata(text: str) -> ControlData:
    """pg_controldata's output (PostgreSQL 18, checked: "Database cluster state: shut down in
    recovery", "Latest checkpoint's TimeLineID: 1", "Min recovery ending loc's timeline: 1")."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    timelines = [
        int(fields[key])
        for key in ("Latest checkpoint's TimeLineID", "Min recovery ending loc's timeline")
        if fields.get(key, "").isdigit() and int(fields[key]) > 0
    ]
    location = fields.get("Latest checkpoint location")
    return ControlData(
        state=fields.get("Database cluster state", "unknown"),
        timeline=max(timelines) if timelines else None,
        checkpoint_lsn=parse_lsn(location) if location and "/" in location else None,
    )


# pg_stat_replication.state and pg_stat_wal_receiver.status of a standby that streams.
STREAMING = "streaming"


@dataclass(frozen=True)
class ReplicaInfo:
    """A row of pg_stat_replication on the primary."""

    name: str
    state: str
    sync_state: str
    flush_lsn: int | None
    replay_lsn: int | None
    replay_lag_s: float | None

    @property
    def streaming(self) -> bool:
        return self.state == STREAMING

    @property
    def synchronous(self) -> bool:
        """Commits wait for it now (pg_stat_replication.sync_state 'sync')."""
        return self.sync_state == "sync"


@dataclass(frozen=True)
class NodeObservation:
    name: str
    reachable: bool
    error: str | None = None
    in_recovery: bool | None = None
    timeline: int | None = None
    current_lsn: int | None = None
    receive_lsn: int | None = None
    replay_lsn: int | None = None
    replay_lag_s: float | None = None
    sync_standby_names: str = ""
    read_only: bool = False
    replicas: tuple[ReplicaInfo, ...] = ()
    receiver_status: str | None = None
    receiver_msg_age_s: float | None = None
    probe_duration_s: float = 0.0
    server: ServerState = ServerState.UNKNOWN
    witness: Witness | None = None
    # Read from its pg_control while its driver says the server is stopped (else None).
    control: ControlData | None = None

    @property
    def receiving(self) -> bool:
        """Its WAL receiver streams from a primary."""
        return self.receiver_status == STREAMING

    @property
    def writable(self) -> bool:
        return self.reachable and self.in_recovery is False

    @property
    def is_standby(self) -> bool:
        return self.reachable and self.in_recovery is True

    @property
    def known_down(self) -> bool:
        """Unreachable over SQL, and its driver says the server is not running."""
        return not self.reachable and self.server in (ServerState.STOPPED, ServerState.NO_DATA)

    def replica(self, name: str) -> ReplicaInfo | None:
        return next((r for r in self.replicas if r.name == name), None)

    def names_sync_standby(self, name: str) -> bool:
        """Whether every commit waits for `name` (synchronous_standby_names as pghad writes it)."""
        return name in waited_for(self.sync_standby_names)


@dataclass(frozen=True)
class ClusterView:
    nodes: Mapping[str, NodeObservation] = field(default_factory=dict)

    def __getitem__(self, name: str) -> NodeObservation:
        return self.nodes[name]

    def writable(self) -> list[str]:
        return [name for name, obs in self.nodes.items() if obs.writable]

    def standby_streaming(self, primary: str | None) -> bool:
        """Whether `primary` is writable and sees a standby streaming from it (one of the nodes:
        not the WAL archive, nor a backup's WAL stream)."""
        obs = self.nodes.get(primary) if primary else None
        return bool(
            obs is not None
            and obs.writable
            and any(r.streaming and r.name in self.nodes for r in obs.replicas)
        )

    def lag_bytes(self, primary: str, standby: str) -> int | None:
        """How far the standby's received WAL trails the primary, from the primary's view."""
        replica = self.nodes[primary].replica(standby)
        current = self.nodes[primary].current_lsn
        if replica is None or current is None or replica.flush_lsn is None:
            return None
        return max(0, current - replica.flush_lsn)


def lagging(view: ClusterView, threshold_s: float) -> frozenset[str]:
    """Standbys whose replay lag is above `threshold_s` (the lag alert)."""
    return frozenset(
        name
        for name, obs in view.nodes.items()
        if obs.is_standby and (obs.replay_lag_s or 0.0) > threshold_s
    )
