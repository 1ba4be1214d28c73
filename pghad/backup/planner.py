"""What backup is due, and of which kind: pure functions over the catalog and `now`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from pghad.backup.model import BackupKind, BackupRecord, BackupStatus


class Requested(StrEnum):
    AUTO = "auto"
    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class Plan:
    kind: BackupKind
    parent: BackupRecord | None
    reason: str


def last_slot(now: datetime, at: time) -> datetime:
    """The most recent scheduled moment at or before `now`."""
    slot = datetime.combine(now.date(), at, tzinfo=now.tzinfo)
    return slot if now >= slot else slot - timedelta(days=1)


def is_due(records: Sequence[BackupRecord], now: datetime, at: time) -> bool:
    """Due when nothing was attempted since the last scheduled moment.

    Runs missed while the daemon was down collapse into one: only the latest slot counts.
    """
    slot = last_slot(now, at)
    return not any(r.started >= slot for r in records)


def choose(
    records: Sequence[BackupRecord],
    requested: Requested,
    cycle_days: int,
    timeline: int | None,
    *,
    today: date | None = None,
    promotion: str | None = None,
) -> Plan:
    """Day 1 of a cycle (by calendar day) is full; the next cycle_days - 1 days are incremental,
    each on the backup before. A second backup on the same day keeps that day's number.

    `promotion`: what made a new primary since the last backup (switchover, failover, ...), for
    the reason when the timeline changed.
    """
    if requested is Requested.FULL:
        return Plan(BackupKind.FULL, None, "full backup requested")
    ok = sorted((r for r in records if r.status is BackupStatus.OK), key=lambda r: r.started)
    if not ok:
        return Plan(BackupKind.FULL, None, "no earlier backup to base an incremental on")
    last = ok[-1]
    by_id = {r.id: r for r in ok}
    missing = [i for i in last.chain if i not in by_id]
    if missing:
        return Plan(BackupKind.FULL, None, f"chain broken: {', '.join(missing)} is missing")
    if last.timeline != timeline:
        why = promotion or "a promotion"
        return Plan(
            BackupKind.FULL,
            None,
            f"timeline changed from {last.timeline} to {timeline} since {last.id} ({why})",
        )
    first = by_id[last.chain[0]]
    day = ((today or last.day) - first.day).days + 1
    if requested is Requested.AUTO and day > cycle_days:
        return Plan(
            BackupKind.FULL,
            None,
            f"day 1 of a new {cycle_days}-day cycle (the last began on {first.day.isoformat()})",
        )
    day = max(day, 1)  # a clock set back does not make day 0
    return Plan(BackupKind.INCREMENTAL, last, f"day {day} of {cycle_days}, on top of {last.id}")


def to_delete(records: Sequence[BackupRecord], keep_cycles: int) -> list[BackupRecord]:
    """Backups outside the last `keep_cycles` cycles that no kept backup depends on."""
    ordered = sorted(records, key=lambda r: r.started)
    fulls = [r for r in ordered if r.kind is BackupKind.FULL and r.status is BackupStatus.OK]
    if len(fulls) <= keep_cycles:
        return []
    oldest_kept = fulls[-keep_cycles]
    kept = [r for r in ordered if r.started >= oldest_kept.started]
    needed = {i for r in kept for i in r.chain}
    return [
        r
        for r in ordered
        if r.started < oldest_kept.started
        and r.id not in needed
        and r.status is not BackupStatus.RUNNING
    ]
