"""The WAL archive in the bucket: finished segments and history files under wal/, the segment
being written (pg_receivewal's .partial) under wal-partial/, replaced as it grows.

The archive directory is the spool: a stored segment waits there until the bucket has it, and is
shipped in name order (timeline, then position) when the bucket is back; nothing is dropped.
"""

from __future__ import annotations

import contextlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from pghad.backup.archive.wal_files import archived, incoming_dir, parse_name, segment_of
from pghad.backup.repository.store import Store

WAL = "wal/"
PARTIAL = "wal-partial/"
PARTIAL_LEVEL = 1


@dataclass
class WalShipper:
    store: Store
    archive_dir: Path
    local_copy: bool
    shipped: set[str] | None = None  # file names the bucket has (listed once, then tracked)
    _partial: tuple[str, int, int] | None = field(default=None, repr=False)

    def _known(self) -> set[str]:
        if self.shipped is None:
            self.shipped = {n.removeprefix(WAL) for n in self.store.names(WAL)}
        return self.shipped

    def waiting(self) -> list[Path]:
        """Stored files the bucket does not have yet, oldest first (needs one listing)."""
        known = self._known()
        files = sorted(archived(self.archive_dir).values(), key=lambda p: p.name)
        return [p for p in files if p.name not in known]

    def spool_bytes(self) -> int:
        total = 0  # before the bucket was ever listed: everything here counts
        for path in archived(self.archive_dir).values():
            if self.shipped is None or path.name not in self.shipped:
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    def ship(self) -> int:
        """Upload what waits, in order; then the newest partial segment when it changed.
        Returns how many files were shipped. Raises RepositoryError (the rest waits)."""
        shipped = 0
        for path in self.waiting():
            self.store.put_file(WAL + path.name, path)
            self._known().add(path.name)
            shipped += 1
            if not self.local_copy and parse_name(path.name):
                path.unlink(missing_ok=True)  # history files stay: tiny, and read at start
        self._ship_partial()
        return shipped

    def _ship_partial(self) -> None:
        incoming = incoming_dir(self.archive_dir)
        partials = [p for p in incoming.glob("*.partial") if parse_name(p.name)]
        if not partials:
            return
        newest = max(partials, key=lambda p: parse_name(p.name) or 0)
        stat = newest.stat()
        seen = (newest.name, stat.st_mtime_ns, stat.st_size)
        if seen == self._partial:
            return
        data = newest.read_bytes()
        packed = zstandard.ZstdCompressor(level=PARTIAL_LEVEL, write_checksum=True).compress(data)
        self.store.put_bytes(f"{PARTIAL}{newest.name}.zst", packed)
        older = [n for n in self.store.names(PARTIAL) if n != f"{PARTIAL}{newest.name}.zst"]
        if older:
            self.store.delete(older)
        self._partial = seen


def fetch_wal(store: Store, archive_dir: Path, start_lsn: int, parallel: int = 4) -> int:
    """Bring into `archive_dir` what recovery from `start_lsn` may need and it lacks: segments
    from there on, every history file, and the newest partial segment (into incoming/) when
    there is none here. Returns the number of files fetched."""
    archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    have = {p.name for p in archived(archive_dir).values()}
    first = segment_of(start_lsn)
    wanted = []
    for name in store.names(WAL):
        file_name = name.removeprefix(WAL)
        wal = parse_name(file_name.removesuffix(".zst").removesuffix(".gz"))
        if file_name not in have and (wal is None or wal.segno >= first):
            wanted.append(file_name)
    with ThreadPoolExecutor(parallel) as pool:
        jobs = [pool.submit(store.get_file, WAL + n, archive_dir / n) for n in wanted]
        for job in jobs:
            job.result()
    incoming = incoming_dir(archive_dir)
    incoming.mkdir(mode=0o700, exist_ok=True)
    partials = sorted(store.names(PARTIAL))
    if partials and not any(incoming.glob("*.partial")):
        name = partials[-1].removeprefix(PARTIAL).removesuffix(".zst")
        packed = io.BytesIO()
        store.get_stream(partials[-1], packed)
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(packed.getvalue())
        tmp = incoming / f".{name}.tmp"
        tmp.write_bytes(plain)
        tmp.replace(incoming / name)
        return len(wanted) + 1
    return len(wanted)


def prune_wal(store: Store, oldest_start_lsn: int, segment_size: int) -> list[str]:
    """Segments in the bucket wholly before the oldest kept backup's start (the rule the local
    archive follows); history files are kept."""
    first = segment_of(oldest_start_lsn, segment_size)
    old = []
    for name in store.names(WAL):
        plain = name.removeprefix(WAL).removesuffix(".zst").removesuffix(".gz")
        wal = parse_name(plain, segment_size)
        if wal is not None and wal.segno < first:
            old.append(name)
    if old:
        store.delete(sorted(old))
    return old
