"""What backup is due, and of which kind: pure functions over the catalog and `now`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum

from .model import BackupKind, BackupRecord, BackupStatus


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
) -> Plan:
    """Day 1 of a cycle is full, the next cycle_days - 1 are incremental on the one before."""
    if requested is Requested.FULL:
        return Plan(BackupKind.FULL, None, "full backup requested")
    ok = sorted((r for r in records if r.status is BackupStatus.OK), key=lambda r: r.started)
    if not ok:
        return Plan(BackupKind.FULL, None, "no earlier backup to base an incremental on")
    last = ok[-1]
    ok_ids = {r.id for r in ok}
    missing = [i for i in last.chain if i not in ok_ids]
    if missing:
        return Plan(BackupKind.FULL, None, f"chain broken: {', '.join(missing)} is missing")
    if last.timeline != timeline:
        return Plan(
            BackupKind.FULL,
            None,
            f"timeline changed from {last.timeline} to {timeline} since {last.id} (failover)",
        )
    if requested is Requested.AUTO and len(last.chain) >= cycle_days:
        return Plan(BackupKind.FULL, None, f"day 1 of a new {cycle_days}-day cycle")
    day = len(last.chain) + 1
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
