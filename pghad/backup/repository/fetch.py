"""Before a restore or a verify: the bucket's catalog merged into the local one, and the files a
restore reads (the chain, the WAL from its start) brought here from the bucket, in parallel."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pghad.archive.pitr import PointTarget, choose_backup
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord
from pghad.backup.zstd_tar import ARCHIVE
from pghad.cluster.observation import parse_lsn
from pghad.config import Config

from . import store_of
from .backups import FILES, fetch_chain, fetch_files, pull_catalog
from .wal import fetch_wal


def pull(config: Config, catalog: Catalog) -> list[BackupRecord]:
    """The bucket's records this host's catalog lacks, added (no bucket: nothing)."""
    store = store_of(config)
    return [] if store is None else pull_catalog(store, catalog, config.backup.dir)


def _chain(catalog: Catalog, record: BackupRecord) -> list[BackupRecord]:
    return [found for member in record.chain if (found := catalog.get(member)) is not None]


async def fetch_backup(config: Config, catalog: Catalog, backup_id: str) -> None:
    """The chain of `backup_id` into the backup directory, where the bucket has it."""
    store = store_of(config)
    record = catalog.get(backup_id)
    if store is None or record is None:
        return
    missing = [m for m in _chain(catalog, record) if not (Path(m.path) / ARCHIVE).exists()]
    await asyncio.to_thread(fetch_chain, store, missing)


async def fetch_for_point(config: Config, catalog: Catalog, point: PointTarget) -> None:
    """The backup a point-in-time restore will start from, and the WAL after its start."""
    store = store_of(config)
    if store is None:
        return
    backup = choose_backup(await asyncio.to_thread(catalog.records), point)
    await fetch_backup(config, catalog, backup.id)
    archive = config.archive.path(config.backup.dir)
    start = parse_lsn(backup.start_lsn) or 0
    await asyncio.to_thread(fetch_wal, store, archive, start, config.repository.parallel)


def drop_fetched(config: Config, catalog: Catalog, backup_id: str) -> None:
    """Without a local copy, what a restore fetched is not kept (the manifests are)."""
    record = catalog.get(backup_id)
    if config.repository.is_s3 and not config.repository.local_copy and record is not None:
        for member in _chain(catalog, record):
            (Path(member.path) / ARCHIVE).unlink(missing_ok=True)


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
        shutil.rmtree(scratch, ignore_errors=True)
