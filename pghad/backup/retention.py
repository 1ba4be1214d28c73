"""Retention: delete whole cycles beyond `keep_cycles`, their files, and WAL nothing needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from pghad.backup.archive.wal_files import DEFAULT_SEGMENT_SIZE, prunable, segment_size
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.planner import to_delete
from pghad.backup.repository import store_of
from pghad.backup.repository.backups import delete_backup
from pghad.backup.repository.wal import prune_wal
from pghad.config.model import Config
from pghad.decide.observation import parse_lsn
from pghad.errors import PghadError
from pghad.system.trust import is_inside

log = structlog.get_logger("pghad")


def apply_retention(config: Config, catalog: Catalog) -> list[BackupRecord]:
    records = catalog.records()
    deleted = to_delete(records, config.backup.keep_cycles)
    store = store_of(config)
    removed = []
    for record in deleted:
        if store is not None:
            try:
                delete_backup(store, record.id)  # the bucket first: never listed there, gone here
            except PghadError as exc:
                # Kept here too until the bucket answers: both hold the same backups.
                log.warning("retention_deferred", backup=record.id, error=str(exc))
                break
        removed.append(record)
        # Only what lies in the backups directory: a forged catalog names no other path.
        if is_inside(Path(record.path), config.backup.dir):
            shutil.rmtree(record.path, ignore_errors=True)
        if record.logical_dump and is_inside(Path(record.logical_dump), config.backup.dir):
            Path(record.logical_dump).unlink(missing_ok=True)
        catalog.delete(record)
    gone = {r.id for r in removed}
    prune_archive(config, [r for r in records if r.id not in gone and r.status is BackupStatus.OK])
    return removed


def prune_archive(config: Config, kept: list[BackupRecord]) -> list[Path]:
    """Archived WAL older than the oldest kept backup's start: nothing can replay it."""
    archive = config.archive.path(config.backup.dir)
    starts = [lsn for r in kept if (lsn := parse_lsn(r.start_lsn)) is not None]
    store = store_of(config)
    if store is not None and starts:
        size = segment_size(archive) if archive.is_dir() else DEFAULT_SEGMENT_SIZE
        try:
            prune_wal(store, min(starts), size)
        except PghadError as exc:
            log.warning("retention_deferred", wal="bucket", error=str(exc))
    if not archive.is_dir() or not starts:
        return []
    old = prunable(archive, min(starts), segment_size(archive))
    for path in old:
        path.unlink(missing_ok=True)
    return old
