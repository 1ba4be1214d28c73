"""Turn decisions, action outcomes, operation results and backup records into events, metrics
and systemd status. Recording never stops the loop: a failure to record is logged and dropped.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime

import structlog

from pghad.act.executor import Outcome
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.decide.model import Decision, action_name
from pghad.decide.observation import ClusterView
from pghad.record.event_sink import EventPipeline
from pghad.record.metrics import Metrics
from pghad.system.notify import SystemdNotifier

log = structlog.get_logger("pghad")


class Recorder:
    def __init__(
        self, pipeline: EventPipeline, metrics: Metrics, notifier: SystemdNotifier
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.notifier = notifier
        self.last_decision: Decision | None = None
        self.lagging: frozenset[str] = frozenset()
        self.dropped = 0

    def event(self, kind: str, /, **fields: object) -> None:
        """One log line and one journal entry (state dir and Redis); `level` picks the level."""
        level = str(fields.pop("level", "info"))
        try:
            self.pipeline.emit(level, kind, fields)
        except Exception as exc:  # stderr gone, or no memory left: never the loop's end
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                with contextlib.suppress(Exception):  # even stderr failed: nothing to do
                    log.error(
                        "event_not_recorded", event=kind, error=str(exc), dropped=self.dropped
                    )

    def decision(self, decision: Decision) -> None:
        previous = self.last_decision
        self.last_decision = decision
        if previous is not None and decision.code == previous.code and not decision.actions:
            return
        self.event(
            "decision",
            state=decision.memory.state.value,
            code=decision.code,
            reason=decision.reason,
            actions=[action_name(a) for a in decision.actions],
            **decision.details,
        )
        self.notifier.status(f"{decision.memory.state.value}: {decision.reason}")

    def lag(self, lagging: frozenset[str], view: ClusterView) -> None:
        """A warning when a standby's replay lag crosses cluster.lag_alert_s, a note when it
        clears; the metric every round."""
        for node in sorted(lagging - self.lagging):
            lag = view.nodes[node].replay_lag_s
            self.event("lag_alert", level="warning", node=node, replay_lag_s=lag)
        for node in sorted(self.lagging - lagging):
            self.event("lag_alert_cleared", node=node)
        for node in view.nodes:
            self.metrics.lag_alert.labels(node).set(1 if node in lagging else 0)
        self.lagging = lagging

    def outcome(self, outcome: Outcome) -> None:
        self.event(
            "action",
            level="info" if outcome.ok else "error",
            action=outcome.name,
            node=outcome.node,
            ok=outcome.ok,
            duration_s=outcome.duration_s,
            detail=outcome.detail,
            **outcome.event_fields(),
        )
        self.metrics.actions.labels(outcome.name, "ok" if outcome.ok else "failed").inc()
        fence = outcome.fence
        if fence is not None and fence.node:
            # Counted on the fenced node, as what happened to it, not on the promoted one.
            self.metrics.fencing.labels(fence.node, "ok" if fence.fenced else "failed").inc()

    def last_backups(self, records: list[BackupRecord]) -> None:
        """Set the last-success gauges from the catalog (after a restart, before any backup)."""
        latest: dict[str, float] = {}
        for record in records:
            if record.status is BackupStatus.OK and record.finished_at:
                finished = datetime.fromisoformat(record.finished_at).timestamp()
                latest[record.kind.value] = max(finished, latest.get(record.kind.value, 0.0))
        for kind, finished in latest.items():
            self.metrics.backup_last_success.labels(kind).set(finished)

    def backup(self, record: BackupRecord) -> None:
        ok = record.status is BackupStatus.OK
        self.event(
            "backup",
            level="info" if ok else "error",
            id=record.id,
            kind=record.kind.value,
            status=record.status.value,
            reason=record.reason,
            duration_s=record.duration_s,
            size_bytes=record.size_bytes,
            source_node=record.source_node,
            logical_dump=record.logical_dump,
            error=record.error,
        )
        kind = record.kind.value
        if ok:
            self.metrics.backup_last_success.labels(kind).set(time.time())
            self.metrics.backup_duration.labels(kind).set(record.duration_s or 0)
            self.metrics.backup_size.labels(kind).set(record.size_bytes or 0)
        else:
            self.metrics.backup_failures.labels(kind).inc()
