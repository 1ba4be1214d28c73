"""The backup cycle by calendar day, and reasons that say what happened."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pghad.backup.model import BackupKind, BackupRecord, BackupStatus
from pghad.backup.planner import Requested, choose
from pghad.backup.steps import promotion_since
from pghad.daemon.memory_file import load_history, save_memory
from pghad.decide.model import Memory
from pghad.decide.promotions import Promotion, PromotionCause

DAY1 = date(2026, 3, 1)


def record(ident: str, day: date, chain: tuple[str, ...], timeline: int = 1) -> BackupRecord:
    kind = BackupKind.FULL if len(chain) == 1 else BackupKind.INCREMENTAL
    return BackupRecord(
        id=ident,
        kind=kind,
        status=BackupStatus.OK,
        day=day,
        started_at=f"{day.isoformat()}T02:00:00+00:00",
        path=f"/b/{ident}",
        chain=chain,
        timeline=timeline,
    )


FULL = record("f", DAY1, ("f",))


@pytest.mark.parametrize(
    ("today", "kind", "reason"),
    [
        (DAY1, BackupKind.INCREMENTAL, "day 1 of 6, on top of f"),  # same day: keeps day 1
        (DAY1 + timedelta(days=1), BackupKind.INCREMENTAL, "day 2 of 6, on top of f"),
        (DAY1 + timedelta(days=5), BackupKind.INCREMENTAL, "day 6 of 6, on top of f"),
        (DAY1 + timedelta(days=6), BackupKind.FULL, "day 1 of a new 6-day cycle"),
        (DAY1 + timedelta(days=30), BackupKind.FULL, "day 1 of a new 6-day cycle"),
    ],
)
def test_the_cycle_counts_calendar_days_not_backups(
    today: date, kind: BackupKind, reason: str
) -> None:
    plan = choose([FULL], Requested.AUTO, 6, 1, today=today)
    assert plan.kind is kind and plan.reason.startswith(reason)


def test_a_second_backup_the_same_day_keeps_the_days_number() -> None:
    day2 = record("i2", DAY1 + timedelta(days=1), ("f", "i2"))
    again = choose([FULL, day2], Requested.AUTO, 6, 1, today=DAY1 + timedelta(days=1))
    assert again.kind is BackupKind.INCREMENTAL and again.reason == "day 2 of 6, on top of i2"


@pytest.mark.parametrize(
    ("promotion", "said"),
    [("switchover", "(switchover)"), ("failover", "(failover)"), (None, "(a promotion)")],
)
def test_a_timeline_change_says_what_made_it(promotion: str | None, said: str) -> None:
    plan = choose([FULL], Requested.AUTO, 6, 2, today=DAY1, promotion=promotion)
    assert plan.kind is BackupKind.FULL
    assert plan.reason == f"timeline changed from 1 to 2 since f {said}"


def test_requested_and_broken_chains_say_so() -> None:
    assert choose([FULL], Requested.FULL, 6, 1).reason == "full backup requested"
    orphan = record("i3", DAY1 + timedelta(days=2), ("gone", "i3"))
    assert choose([orphan], Requested.AUTO, 6, 1).reason == "chain broken: gone is missing"


def test_the_promotion_comes_from_the_daemons_history(tmp_path: Path) -> None:
    at = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
    switchover = Promotion(at, PromotionCause.SWITCHOVER, "a", "b", 0.3, "switchover")
    save_memory(tmp_path, Memory(primary="b"), [switchover])
    history = load_history(tmp_path)
    assert history == [switchover]
    assert promotion_since(history, [FULL]) == "switchover"  # FULL started 02:00 that day
    later = record("g", DAY1 + timedelta(days=1), ("g",))
    assert promotion_since(history, [FULL, later]) is None  # the backup came after it
    automatic = replace(switchover, cause=PromotionCause.AUTOMATIC)
    assert promotion_since([automatic], [FULL]) == "failover"
