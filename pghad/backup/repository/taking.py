"""The bucket's part in taking a backup: the archive streamed up as pg_basebackup writes it,
the manifest beside it, both checked, then the backup listed (record.json); a failed backup's
objects removed."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.repository import store_of
from pghad.backup.repository.backups import (
    MANIFEST,
    fetch_files,
    folder,
    list_backup,
    remove_upload,
    upload_backup,
)
from pghad.backup.repository.store import Store
from pghad.backup.repository.upstream import Upstream
from pghad.backup.steps import remove_partial
from pghad.backup.zstd_tar import ARCHIVE, basebackup_to_zstd
from pghad.config.model import Config
from pghad.errors import PghadError


@dataclass
class Taking:
    config: Config
    upstream: Upstream | None = None

    @property
    def store(self) -> Store | None:
        return store_of(self.config)

    async def basebackup_zstd(self, program: list[str], path: Path, backup_id: str) -> None:
        """pg_basebackup's tar compressed, checked, and streamed to the bucket as it comes
        (kept here too with repository.local_copy)."""
        password = self.config.auth.replication_password
        level = self.config.backup.zstd_level
        store = self.store
        if store is None:
            await basebackup_to_zstd(program, password, path, level)
            return
        self.upstream = upstream = Upstream(store, folder(backup_id) + ARCHIVE)
        local = self.config.repository.local_copy
        try:
            await basebackup_to_zstd(program, password, path, level, sink=upstream, local=local)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(upstream.abandon))
            raise
        await asyncio.to_thread(upstream.close)

    async def upload(self, record: BackupRecord) -> BackupRecord:
        """The manifest beside the streamed archive; both checked in the bucket."""
        store, upstream = self.store, self.upstream
        if store is None or upstream is None:
            return record
        return await asyncio.to_thread(upload_backup, store, record, upstream.written)

    async def list(self, record: BackupRecord) -> BackupRecord:
        """The bucket lists the backup (its record.json) once every file is stored; a failure
        there fails the backup, and removes it here and there."""
        store = self.store if record.status is BackupStatus.OK else None
        if store is None:
            return record
        try:
            await asyncio.to_thread(list_backup, store, record)
        except PghadError as exc:
            await asyncio.to_thread(remove_partial, record)
            await self.remove(record.id)
            return record.with_(status=BackupStatus.FAILED, error=f"step upload: {exc}")
        return record

    async def remove(self, backup_id: str) -> None:
        """What a failed backup had put in the bucket (best effort: it was never listed)."""
        if not self.config.repository.is_s3:
            return
        with contextlib.suppress(PghadError):
            store = self.store
            if store is not None:
                await asyncio.to_thread(remove_upload, store, backup_id)

    async def parent_manifest(self, parent: BackupRecord) -> None:
        """An incremental needs its parent's manifest: from the bucket when it is not here."""
        store = self.store
        if store is not None and not (Path(parent.path) / MANIFEST).exists():
            await asyncio.to_thread(fetch_files, store, parent, Path(parent.path), (MANIFEST,))
