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
from pghad.backup.steps import StepFailed, make_private_dir
from pghad.backup.zstd_tar import ARCHIVE

from .store import Store

MANIFEST = "backup_manifest"
RECORD = "record.json"
FILES = (ARCHIVE, MANIFEST)


def folder(backup_id: str) -> str:
    return f"backups/{backup_id}/"


def upload_backup(store: Store, record: BackupRecord, local_copy: bool) -> BackupRecord:
    """Store the backup's files and check the bucket has each whole (list_backup lists it).
    Without a local copy, the archive is removed here (the manifest stays, for incrementals)."""
    path = Path(record.path)
    sizes = {name: (path / name).stat().st_size for name in FILES}
    with ThreadPoolExecutor(len(FILES)) as pool:
        for done in [pool.submit(store.put_file, folder(record.id) + n, path / n) for n in FILES]:
            done.result()
    stored = store.names(folder(record.id))
    for name, size in sizes.items():
        if folder(record.id) + name not in stored:
            raise StepFailed("upload", f"{store.where}{folder(record.id)}{name} is missing")
        if store.key is None and stored[folder(record.id) + name] != size:
            raise StepFailed("upload", f"{store.where}{folder(record.id)}{name}: size differs")
    if not local_copy:
        (path / ARCHIVE).unlink(missing_ok=True)
    return record.with_(extra={**record.extra, "repository": store.where})


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


def fetch_chain(store: Store, chain: list[BackupRecord]) -> None:
    """Every member's files into its local path, from the bucket, members in parallel."""
    with ThreadPoolExecutor(max(1, len(chain))) as pool:
        jobs = [pool.submit(fetch_files, store, m, Path(m.path), FILES) for m in chain]
        for job in jobs:
            job.result()


def delete_backup(store: Store, backup_id: str) -> None:
    remove_upload(store, backup_id)
