"""Retention: delete whole cycles beyond `keep_cycles`, their files, and WAL nothing needs."""

from __future__ import annotations

import shutil
from pathlib import Path

from pghad.archive.wal_files import prunable, segment_size
from pghad.cluster.observation import parse_lsn
from pghad.config import Config
from pghad.trust import is_inside

from .catalog import Catalog
from .model import BackupRecord, BackupStatus
from .planner import to_delete


def apply_retention(config: Config, catalog: Catalog) -> list[BackupRecord]:
    records = catalog.records()
    deleted = to_delete(records, config.backup.keep_cycles)
    for record in deleted:
        # Only what lies in the backups directory: a forged catalog names no other path.
        if is_inside(Path(record.path), config.backup.dir):
            shutil.rmtree(record.path, ignore_errors=True)
        if record.logical_dump and is_inside(Path(record.logical_dump), config.backup.dir):
            Path(record.logical_dump).unlink(missing_ok=True)
        catalog.delete(record)
    gone = {r.id for r in deleted}
    prune_archive(config, [r for r in records if r.id not in gone and r.status is BackupStatus.OK])
    return deleted


def prune_archive(config: Config, kept: list[BackupRecord]) -> list[Path]:
    """Archived WAL older than the oldest kept backup's start: nothing can replay it."""
    archive = config.archive.path(config.backup.dir)
    starts = [lsn for r in kept if (lsn := parse_lsn(r.start_lsn)) is not None]
    if not archive.is_dir() or not starts:
        return []
    old = prunable(archive, min(starts), segment_size(archive))
    for path in old:
        path.unlink(missing_ok=True)
    return old
