"""WAL file names, and the archive's files: compress a finished segment, list, expand, prune.

The archive directory holds `incoming/` (pg_receivewal's own directory: the segment being
written, as `.partial`) and the finished segments, compressed (`<name>.zst`, `.gz` or plain),
plus timeline history files.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pghad.system.files import fsync_path

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?(\.zst|\.gz)?$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
SUFFIXES = {"zstd": ".zst", "gzip": ".gz", "none": ""}
ZSTD_LEVEL = 3


@dataclass(frozen=True, order=True)
class WalName:
    """A segment's place: timeline and segment number (position / segment size)."""

    timeline: int
    segno: int
    partial: bool = False

    def file_name(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
        per_id = 0x100000000 // segment_size
        name = f"{self.timeline:08X}{self.segno // per_id:08X}{self.segno % per_id:08X}"
        return name + (".partial" if self.partial else "")


def parse_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalName | None:
    match = SEGMENT.match(name)
    if match is None:
        return None
    per_id = 0x100000000 // segment_size
    timeline, log, seg = (int(g, 16) for g in match.group(1, 2, 3))
    return WalName(timeline, log * per_id + seg, match.group(4) is not None)


def segment_of(lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return lsn // segment_size


def incoming_dir(archive_dir: Path) -> Path:
    return archive_dir / "incoming"


def stored_name(name: str, compression: str) -> str:
    return name + SUFFIXES[compression]


def compress_file(source: Path, target: Path, compression: str) -> int:
    """Write `source` compressed to `target` (temp file, fsync, rename); returns its size."""
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        if compression == "zstd":
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
            writer = compressor.stream_writer(dst)
            shutil.copyfileobj(src, writer, 1 << 20)
            writer.flush(zstandard.FLUSH_FRAME)
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=1) as zipped:
                shutil.copyfileobj(src, zipped, 1 << 20)
        else:
            shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    tmp.replace(target)
    fsync_path(target.parent)
    return target.stat().st_size


def expand_file(source: Path, target: Path) -> None:
    """Write the plain content of an archived file (any of its compressions) to `target`."""
    with source.open("rb") as src, target.open("wb") as dst:
        if source.suffix == ".zst":
            zstandard.ZstdDecompressor().copy_stream(src, dst, write_size=1 << 20)
        elif source.suffix == ".gz":
            with gzip.GzipFile(fileobj=src, mode="rb") as zipped:
                shutil.copyfileobj(zipped, dst, 1 << 20)
        else:
            shutil.copyfileobj(src, dst, 1 << 20)


def finished_in_incoming(archive_dir: Path) -> list[Path]:
    """Segments pg_receivewal has finished (full names), and `.partial` files of timelines it has
    left: a newer timeline's segment exists, so nothing more will be written to them."""
    files = [p for p in incoming_dir(archive_dir).iterdir() if parse_name(p.name)]
    names = {p: parse_name(p.name) for p in files}
    newest = max((n.timeline for n in names.values() if n is not None), default=0)
    done = []
    for path, name in names.items():
        assert name is not None
        if not name.partial or name.timeline < newest:
            done.append(path)
    return sorted(done, key=lambda p: p.name)


def archived(archive_dir: Path) -> dict[str, Path]:
    """Archived segment and history files by their plain name (compression suffix removed)."""
    found: dict[str, Path] = {}
    for path in archive_dir.iterdir():
        name = path.name.removesuffix(".zst").removesuffix(".gz")
        if path.is_file() and (SEGMENT.match(path.name) or HISTORY.match(name)):
            found[name] = path
    return found


def segment_size(archive_dir: Path) -> int:
    """pg_receivewal pads a partial segment to the full size: the server's wal_segment_size."""
    for partial in incoming_dir(archive_dir).glob("*.partial"):
        return partial.stat().st_size
    return DEFAULT_SEGMENT_SIZE


def prunable(archive_dir: Path, oldest_start_lsn: int, segment_size: int) -> list[Path]:
    """Archived segments wholly before the oldest kept backup's start: no kept backup needs them.
    History files are always kept (they are tiny and any restore may need them)."""
    first_needed = segment_of(oldest_start_lsn, segment_size)
    old = []
    for name, path in archived(archive_dir).items():
        wal = parse_name(name, segment_size)
        if wal is not None and wal.segno < first_needed:
            old.append(path)
    return sorted(old)
