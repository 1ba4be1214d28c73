"""Prometheus metrics, set from each round's snapshot: a scrape never queries PostgreSQL."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pghad.backup.archive.archiver import ArchiveState
from pghad.decide.model import ClusterState, Memory
from pghad.decide.observation import ClusterView

ROLES = ("primary", "standby", "down", "fenced")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.node_up = Gauge(
            "pghad_node_up", "1 if the node answered the last probe", ["node"], registry=r
        )
        self.node_role = Gauge(
            "pghad_node_role", "1 for the node's current role", ["node", "role"], registry=r
        )
        self.in_recovery = Gauge(
            "pghad_node_in_recovery", "1 if the node is in recovery", ["node"], registry=r
        )
        self.timeline = Gauge("pghad_node_timeline", "The node's timeline ID", ["node"], registry=r)
        self.lag_seconds = Gauge(
            "pghad_node_replay_lag_seconds", "Standby replay lag in seconds", ["node"], registry=r
        )
        self.lag_bytes = Gauge(
            "pghad_node_replay_lag_bytes",
            "Bytes of WAL the standby has not yet received from the primary",
            ["node"],
            registry=r,
        )
        self.state = Gauge(
            "pghad_cluster_state", "1 for the daemon's current state", ["state"], registry=r
        )
        self.eligible = Gauge(
            "pghad_standby_eligible", "1 if the standby may be promoted automatically", registry=r
        )
        self.standby_streaming = Gauge(
            "pghad_standby_streaming",
            "1 while the primary sees its standby streaming (0 also when no primary is known)",
            registry=r,
        )
        self.sync_relaxed = Gauge(
            "pghad_sync_relaxed",
            "1 while synchronous mode is configured but the primary names no synchronous standby",
            registry=r,
        )
        self.paused = Gauge(
            "pghad_paused", "1 while maintenance mode holds every automatic action", registry=r
        )
        self.archive_enabled = Gauge(
            "pghad_archive_enabled", "1 when [archive] enabled = true", registry=r
        )
        self.archive_streaming = Gauge(
            "pghad_archive_streaming", "1 while the WAL archive streams", registry=r
        )
        self.archive_flushed_lsn = Gauge(
            "pghad_archive_flushed_lsn", "The last WAL position the archive has on disk", registry=r
        )
        self.archive_lag_bytes = Gauge(
            "pghad_archive_lag_bytes", "Bytes of WAL the archive does not have yet", registry=r
        )
        self.archive_lag_seconds = Gauge(
            "pghad_archive_lag_seconds",
            "Seconds since the archive last had every WAL byte of the primary",
            registry=r,
        )
        self.archive_segments = Gauge(
            "pghad_archive_segments", "Finished WAL segments in the archive", registry=r
        )
        self.archive_stored_bytes = Gauge(
            "pghad_archive_stored_bytes", "Bytes the archive takes on disk", registry=r
        )
        self.archive_spool_bytes = Gauge(
            "pghad_archive_spool_bytes",
            "Archived WAL waiting on this host for the bucket (repository.type = s3)",
            registry=r,
        )
        self.archive_spool_alert_bytes = Gauge(
            "pghad_archive_spool_alert_bytes", "repository.spool_alert_mb in bytes", registry=r
        )
        self.lag_alert = Gauge(
            "pghad_replication_lag_alert",
            "1 while the node's replay lag is above cluster.lag_alert_s",
            ["node"],
            registry=r,
        )
        self.hooks = Counter(
            "pghad_hooks", "Role-change hook runs by outcome", ["event", "outcome"], registry=r
        )
        self.failovers = Counter("pghad_failovers", "Promotions by cause", ["cause"], registry=r)
        self.last_failover = Gauge(
            "pghad_last_failover_duration_seconds",
            "Duration of the last promotion procedure",
            registry=r,
        )
        self.probe = Histogram(
            "pghad_probe_duration_seconds",
            "Probe round trip per node",
            ["node"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.fencing = Counter(
            "pghad_fencing_actions", "Fencing actions by outcome", ["node", "outcome"], registry=r
        )
        self.actions = Counter(
            "pghad_actions", "Actions by kind and outcome", ["action", "outcome"], registry=r
        )
        self.last_round = Gauge(
            "pghad_last_round_timestamp_seconds",
            "Unix time the last observe-decide-act round finished",
            registry=r,
        )
        self.backup_last_success = Gauge(
            "pghad_backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup",
            ["kind"],
            registry=r,
        )
        self.backup_duration = Gauge(
            "pghad_backup_last_duration_seconds",
            "Duration of the last successful backup",
            ["kind"],
            registry=r,
        )
        self.backup_size = Gauge(
            "pghad_backup_last_size_bytes",
            "Size on disk of the last successful backup",
            ["kind"],
            registry=r,
        )
        self.backup_failures = Counter(
            "pghad_backup_failures", "Failed backups", ["kind"], registry=r
        )
        for cause in ("automatic", "manual", "switchover", "failback"):
            self.failovers.labels(cause)

    def observe_round(
        self, view: ClusterView, memory: Memory, wall_time: float, synchronous: bool = True
    ) -> None:
        primary = view.nodes.get(memory.primary) if memory.primary else None
        relaxed = bool(
            synchronous
            and primary is not None
            and primary.writable
            and not primary.sync_standby_names.strip()
        )
        self.standby_streaming.set(1 if view.standby_streaming(memory.primary) else 0)
        self.sync_relaxed.set(1 if relaxed else 0)
        for name, obs in view.nodes.items():
            self.node_up.labels(name).set(1 if obs.reachable else 0)
            self.probe.labels(name).observe(obs.probe_duration_s)
            role = _role(name, obs.reachable, obs.in_recovery, memory)
            for candidate in ROLES:
                self.node_role.labels(name, candidate).set(1 if candidate == role else 0)
            if obs.reachable:
                self.in_recovery.labels(name).set(1 if obs.in_recovery else 0)
                if obs.timeline is not None:
                    self.timeline.labels(name).set(obs.timeline)
            if obs.is_standby:
                self.lag_seconds.labels(name).set(obs.replay_lag_s or 0.0)
                if memory.primary is not None and memory.primary in view.nodes:
                    lag = view.lag_bytes(memory.primary, name)
                    if lag is not None:
                        self.lag_bytes.labels(name).set(lag)
        for state in ClusterState:
            self.state.labels(state.value).set(1 if state is memory.state else 0)
        self.eligible.set(1 if memory.standby_eligible else 0)
        self.last_round.set(wall_time)

    def observe_archive(self, state: ArchiveState | None) -> None:
        self.archive_enabled.set(0 if state is None else 1)
        if state is None:
            return
        self.archive_streaming.set(1 if state.streaming else 0)
        if state.flushed_lsn is not None:
            self.archive_flushed_lsn.set(state.flushed_lsn)
        self.archive_lag_bytes.set(state.lag_bytes if state.lag_bytes is not None else float("nan"))
        self.archive_lag_seconds.set(state.lag_s if state.lag_s is not None else float("nan"))
        self.archive_segments.set(state.segments)
        self.archive_stored_bytes.set(state.stored_bytes)
        self.archive_spool_bytes.set(state.spool_bytes)
        alert = state.spool_alert_bytes
        self.archive_spool_alert_bytes.set(alert if alert is not None else float("nan"))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _role(name: str, reachable: bool, in_recovery: bool | None, memory: Memory) -> str:
    if not reachable:
        return "fenced" if name in memory.needs_rejoin else "down"
    return "standby" if in_recovery else "primary"
