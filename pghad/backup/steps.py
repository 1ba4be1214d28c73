"""The pieces of a backup that need no runner: checks, names, sizes, manifests, cleanup."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from pghad.backup.model import BackupRecord, BackupStatus
from pghad.decide.observation import ClusterView, NodeObservation, format_lsn, parse_lsn
from pghad.decide.promotions import Promotion, PromotionCause
from pghad.errors import OperationRefused, PghadError


class StepFailed(PghadError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step}: {message}")
        self.step, self.detail = step, message


@contextmanager
def backup_lock(backup_dir: Path) -> Iterator[None]:
    make_private_dir(backup_dir)
    with (backup_dir / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OperationRefused(
                "a backup is already running (another pghad holds the backup lock); retry "
                "when it has finished"
            ) from exc
        yield


def make_private_dir(directory: Path) -> None:
    """The backups directory holds every row and password hash: only root may read it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)


def unwritable(directory: Path) -> str | None:
    """Why files cannot be created in `directory` (made if missing), or None."""
    try:
        make_private_dir(directory)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pick_source(view: ClusterView, prefer: str) -> NodeObservation | None:
    """The standby when it is healthy and preferred, else the primary (or any reachable node)."""
    standbys = [o for o in view.nodes.values() if o.is_standby and o.receiving]
    primaries = [o for o in view.nodes.values() if o.writable]
    ordered = standbys + primaries if prefer == "standby" else primaries + standbys
    return ordered[0] if ordered else None


def summaries_gap(rows: list[tuple[int, str, str]], timeline: int, start: int) -> str | None:
    """Why WAL summaries on `timeline` cannot serve an incremental from `start`, or None.

    Summaries not written yet (the summarizer is behind) are not a gap: pg_basebackup waits.
    """
    spans = sorted((parse_lsn(s) or 0, parse_lsn(e) or 0) for tli, s, e in rows if tli == timeline)
    if not spans:
        return None
    if spans[0][0] > start:
        return f"summaries begin at {format_lsn(spans[0][0])}, after {format_lsn(start)}"
    reached = start
    for span_start, span_end in spans:
        if span_end <= start:
            continue
        if span_start > reached:
            return f"no summary between {format_lsn(reached)} and {format_lsn(span_start)}"
        reached = max(reached, span_end)
    return None


def dump_path(backup_dir: Path, day: date, taken: set[str]) -> Path:
    """backup_completo_YYYYMMDD.sql.gz for the day's first dump, then _2, _3: one per backup."""
    number = 1
    while True:
        suffix = "" if number == 1 else f"_{number}"
        path = backup_dir / f"backup_completo_{day:%Y%m%d}{suffix}.sql.gz"
        if str(path) not in taken and not path.exists():
            return path
        number += 1


def partial_dump(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def remove_partial(record: BackupRecord) -> None:
    """Everything a failed backup wrote: its directory, its dump and the dump's temp file."""
    shutil.rmtree(record.path, ignore_errors=True)
    if record.logical_dump:
        dump = Path(record.logical_dump)
        dump.unlink(missing_ok=True)
        partial_dump(dump).unlink(missing_ok=True)


def verify_args(record: BackupRecord) -> list[str]:
    # pg_waldump cannot read WAL inside tar files; the manifest still checks every file.
    return ["--quiet", *(["--no-parse-wal"] if record.is_tar else []), record.path]


def read_manifest(path: Path) -> dict[str, Any]:
    """The backup_manifest of the backup at `path` (one entry per file: large for a large
    cluster, so read it in a thread)."""
    manifest: dict[str, Any] = json.loads((path / "backup_manifest").read_text())
    return manifest


def manifest_wal_range(path: Path) -> tuple[str, str, int]:
    ranges = read_manifest(path)["WAL-Ranges"]
    return ranges[0]["Start-LSN"], ranges[-1]["End-LSN"], int(ranges[-1]["Timeline"])


CAUSES = {
    PromotionCause.AUTOMATIC: "failover",
    PromotionCause.MANUAL: "manual failover",
    PromotionCause.SWITCHOVER: "switchover",
    PromotionCause.FAILBACK: "failback",
}


def promotion_since(history: Sequence[Promotion], records: list[BackupRecord]) -> str | None:
    """What made the latest new primary after the last good backup: failover, switchover, ...
    (from the daemon's promotion history), or None."""
    ok = [r for r in records if r.status is BackupStatus.OK]
    if not ok or not history or history[-1].at <= max(r.started for r in ok):
        return None
    return CAUSES[history[-1].cause]
