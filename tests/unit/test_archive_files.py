"""The archive's file rules and the choice of a backup for a point-in-time restore."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pghad.backup.archive.pitr import PointTarget, choose_backup, recovery_settings
from pghad.backup.archive.wal_files import (
    WalName,
    archived,
    compress_file,
    expand_file,
    finished_in_incoming,
    incoming_dir,
    parse_name,
    prunable,
)
from pghad.backup.model import BackupKind, BackupRecord, BackupStatus
from pghad.errors import OperationRefused

MB16 = 16 * 1024 * 1024


def test_names_round_trip_and_order_by_timeline_then_position() -> None:
    assert parse_name("000000020000000100000003") == WalName(2, 256 + 3)
    assert parse_name("000000010000000000000007.partial") == WalName(1, 7, partial=True)
    assert parse_name("000000010000000000000007.zst") == WalName(1, 7)
    assert parse_name("00000002.history") is None
    assert WalName(2, 259).file_name() == "000000020000000100000003"
    assert WalName(1, 300) < WalName(2, 1)


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_a_compressed_segment_expands_to_the_same_bytes(tmp_path: Path, compression: str) -> None:
    source = tmp_path / "000000010000000000000001"
    source.write_bytes(os.urandom(1 << 16) + bytes(MB16 - (1 << 16)))
    stored = tmp_path / ("stored" + {"zstd": ".zst", "gzip": ".gz", "none": ""}[compression])
    size = compress_file(source, stored, compression)
    assert stored.stat().st_mode & 0o777 == 0o600
    if compression != "none":
        assert size < MB16 // 10
    expand_file(stored, tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == source.read_bytes()


def test_only_finished_segments_and_left_timelines_partials_are_stored(tmp_path: Path) -> None:
    incoming = incoming_dir(tmp_path)
    incoming.mkdir()
    for name in (
        "000000010000000000000003",
        "000000010000000000000004.partial",  # timeline 1 ended here (a promotion)
        "000000020000000000000004.partial",  # still being written
        "00000002.history",
    ):
        (incoming / name).write_text("x")
    done = [p.name for p in finished_in_incoming(tmp_path)]
    assert done == ["000000010000000000000003", "000000010000000000000004.partial"]


def test_pruning_keeps_everything_the_oldest_backup_needs(tmp_path: Path) -> None:
    for name in (
        "000000010000000000000001.zst",
        "000000010000000000000002.zst",
        "000000010000000000000003.zst",
        "000000010000000000000004.partial.zst",
        "000000020000000000000004.zst",
        "00000002.history",
    ):
        (tmp_path / name).write_text("x")
    assert set(archived(tmp_path)) >= {"00000002.history", "000000010000000000000001"}
    start = 3 * MB16 + 4096  # the oldest kept backup starts inside segment 3
    gone = [p.name for p in prunable(tmp_path, start, MB16)]
    assert gone == ["000000010000000000000001.zst", "000000010000000000000002.zst"]


def _record(ident: str, finished: datetime, stop_lsn: str, ok: bool = True) -> BackupRecord:
    return BackupRecord(
        id=ident,
        kind=BackupKind.FULL,
        day=date(2026, 11, 26),
        started_at=(finished - timedelta(seconds=5)).isoformat(),
        finished_at=finished.isoformat(),
        path=f"/b/{ident}",
        status=BackupStatus.OK if ok else BackupStatus.FAILED,
        start_lsn="0/2000028",
        stop_lsn=stop_lsn,
        chain=(ident,),
    )


def test_the_newest_good_backup_before_the_point_is_chosen() -> None:
    t0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    records = [
        _record("a", t0, "0/3000000"),
        _record("b", t0 + timedelta(hours=1), "0/5000000"),
        _record("c", t0 + timedelta(hours=2), "0/7000000", ok=False),
        _record("d", t0 + timedelta(hours=3), "0/9000000"),
    ]
    assert choose_backup(records, PointTarget(time=t0 + timedelta(hours=2))).id == "b"
    assert choose_backup(records, PointTarget(lsn=0x5000000)).id == "b"
    assert choose_backup(records, PointTarget()).id == "d"
    with pytest.raises(OperationRefused, match="no good backup ended before"):
        choose_backup(records, PointTarget(time=t0 - timedelta(minutes=1)))


def test_recovery_settings_name_the_point_and_follow_the_latest_timeline(tmp_path: Path) -> None:
    when = datetime(2026, 11, 26, 14, 5, tzinfo=UTC)
    text = recovery_settings(tmp_path, PointTarget(time=when))
    assert "recovery_target_time = '2026-11-26 14:05:00+00:00'" in text
    assert "recovery_target_timeline = 'latest'" in text
    assert "recovery_target_action = 'promote'" in text
    assert "recovery_target" not in recovery_settings(tmp_path, PointTarget()).replace(
        "recovery_target_timeline", ""
    ).replace("recovery_target_action", "")
