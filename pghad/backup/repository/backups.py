"""Backups in the bucket: each under backups/<id>/, listed by its record.json, written last.

The bucket holds its own catalog (one record.json per backup), so a host with only the config
(and the key) lists and restores them: pull_catalog fills the local catalog, and through it
Redis, from the bucket.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.repository.crypto import sealed_size
from pghad.backup.repository.store import Store
from pghad.backup.steps import StepFailed, make_private_dir
from pghad.backup.zstd_tar import ARCHIVE

MANIFEST = "backup_manifest"
RECORD = "record.json"
FILES = (ARCHIVE, MANIFEST)


def folder(backup_id: str) -> str:
    return f"backups/{backup_id}/"


def upload_backup(store: Store, record: BackupRecord, streamed: int) -> BackupRecord:
    """After the archive streamed up (`streamed` bytes): store the manifest beside it and check
    the bucket has both whole (list_backup then lists the backup)."""
    path = folder(record.id)
    store.put_file(path + MANIFEST, Path(record.path) / MANIFEST)
    expected = {ARCHIVE: streamed, MANIFEST: (Path(record.path) / MANIFEST).stat().st_size}
    stored = store.names(path)
    for name, plain in expected.items():
        size = plain if store.key is None else sealed_size(plain)
        if stored.get(path + name) != size:
            found = stored.get(path + name, "no object")
            raise StepFailed(
                "upload", f"{store.where}{path}{name}: {found} bytes stored, {size} sent"
            )
    archive = streamed if store.key is None else sealed_size(streamed)
    return record.with_(
        size_bytes=archive + stored[path + MANIFEST],
        extra={**record.extra, "repository": store.where},
    )


def list_backup(store: Store, record: BackupRecord) -> None:
    """Its record.json: from now on the bucket lists the backup."""
    store.put_bytes(folder(record.id) + RECORD, json.dumps(record.to_dict()).encode())


def remove_upload(store: Store, backup_id: str) -> None:
    """A failed backup's objects (record.json first: never listed half-deleted)."""
    names = sorted(store.names(folder(backup_id)), key=lambda n: not n.endswith(RECORD))
    if names:
        store.delete(names)


def stored_records(store: Store) -> list[BackupRecord]:
    names = [n for n in store.names("backups/") if n.endswith("/" + RECORD)]
    with ThreadPoolExecutor(8) as pool:
        raw = list(pool.map(store.get_bytes, names))
    return [BackupRecord.from_dict(json.loads(data)) for data in raw]


def pull_catalog(store: Store, catalog: Catalog, backup_dir: Path) -> list[BackupRecord]:
    """Records the bucket has and the local catalog lacks, saved there (and so to Redis), with
    their paths in this host's backup directory. Returns those added."""
    known = {r.id for r in catalog.records()}
    added = []
    for record in sorted(stored_records(store), key=lambda r: r.started):
        if record.id in known or record.status is not BackupStatus.OK:
            continue
        local = record.with_(path=str(backup_dir / record.id), logical_dump=None)
        make_private_dir(backup_dir)
        catalog.save(local)
        added.append(local)
    return added


def fetch_files(store: Store, record: BackupRecord, into: Path, names: tuple[str, ...]) -> None:
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in names:
        if not (into / name).exists():
            store.get_file(folder(record.id) + name, into / name)


def delete_backup(store: Store, backup_id: str) -> None:
    remove_upload(store, backup_id)
