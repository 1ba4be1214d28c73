"""Before a restore or a verify: the bucket's catalog merged into the local one, the WAL a
point-in-time restore replays brought here (in parallel), a backup to verify read from the
bucket. (A restore streams the chain itself from the bucket: streaming.py.)"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pghad.backup.archive.pitr import PointTarget, choose_backup
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord
from pghad.backup.repository import store_of
from pghad.backup.repository.backups import FILES, fetch_files, pull_catalog
from pghad.backup.repository.wal import fetch_wal
from pghad.config.model import Config
from pghad.decide.observation import parse_lsn


def pull(config: Config, catalog: Catalog) -> list[BackupRecord]:
    """The bucket's records this host's catalog lacks, added (no bucket: nothing)."""
    store = store_of(config)
    return [] if store is None else pull_catalog(store, catalog, config.backup.dir)


async def fetch_wal_for_point(config: Config, catalog: Catalog, point: PointTarget) -> str | None:
    """The WAL a point-in-time restore will replay (from the start of the backup it will
    start from), from the bucket; returns that backup's id (None without a bucket)."""
    store = store_of(config)
    if store is None:
        return None
    backup = choose_backup(await asyncio.to_thread(catalog.records), point)
    archive = config.archive.path(config.backup.dir)
    start = parse_lsn(backup.start_lsn) or 0
    await asyncio.to_thread(fetch_wal, store, archive, start, config.repository.parallel)
    return backup.id


@asynccontextmanager
async def verifiable(config: Config, record: BackupRecord) -> AsyncIterator[BackupRecord]:
    """`record` as verify reads it: from the bucket (into a scratch directory) when the
    repository is S3, else as it is here."""
    store = store_of(config)
    if store is None:
        yield record
        return
    scratch = Path(tempfile.mkdtemp(prefix="pghad-verify-"))
    try:
        await asyncio.to_thread(fetch_files, store, record, scratch, FILES)
        yield record.with_(path=str(scratch))
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
