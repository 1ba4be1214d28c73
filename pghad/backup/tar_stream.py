"""Tar streams as pg_basebackup writes them (plain ustar members, names under 100 bytes),
followed in pieces of any size: every file checked against the backup's manifest, optionally
unpacked on the way."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import google_crc32c

from pghad.backup.archive.wal_files import DEFAULT_SEGMENT_SIZE, WalName, parse_name
from pghad.backup.steps import StepFailed
from pghad.decide.observation import parse_lsn

BLOCK = 512
REGULAR_FILE = (b"0", b"\0")  # ustar's type flags of a regular file
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class TarCheck:
    """Follows a tar stream fed in pieces of any size: every file's size and CRC32C, and the
    manifest."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, int]] = {}
        self.manifest: bytes | None = None
        self.ended = False
        self._header = b""
        self._name: str | None = None  # the regular file whose data comes next
        self._size = 0
        self._left = 0  # bytes of the current member's data still to come
        self._padding = 0
        self._crc = 0
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data) and not self.ended:
            if self._left:
                piece = data[pos : pos + self._left]
                self._data(piece)
                pos += len(piece)
            elif self._padding:
                skipped = min(self._padding, len(data) - pos)
                self._padding -= skipped
                pos += skipped
            else:
                piece = data[pos : pos + BLOCK - len(self._header)]
                self._header += piece
                pos += len(piece)
                if len(self._header) == BLOCK:
                    self._start(self._header)
                    self._header = b""

    def _data(self, piece: bytes) -> None:
        self._left -= len(piece)
        self._write(piece)
        if self._name == "backup_manifest":
            self._parts.append(piece)
        elif self._name is not None:
            self._crc = int(google_crc32c.extend(self._crc, piece))
        if not self._left:
            self._finish()

    def _start(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self.ended = True  # the end marker; what follows it is padding
            return
        stored = header[148:156].rstrip(b" \0")
        if not stored or int(stored, 8) != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise StepFailed("verify", "a tar header is damaged (its checksum does not match)")
        prefix = header[345:500].split(b"\0", 1)[0].decode()
        name = header[:100].split(b"\0", 1)[0].decode()
        name = f"{prefix}/{name}" if prefix else name
        kind = header[156:157]
        self._name = name if kind in REGULAR_FILE else None
        self._begin(name, kind, int(header[100:108].rstrip(b" \0") or b"600", 8))
        size = int(header[124:136].rstrip(b" \0") or b"0", 8)
        self._size, self._left, self._padding, self._crc = size, size, -size % BLOCK, 0
        if not size:
            self._finish()

    def _finish(self) -> None:
        if self._name == "backup_manifest":
            self.manifest = b"".join(self._parts)
        elif self._name is not None:
            # The checksum as PostgreSQL writes it in the manifest.
            self.files[self._name] = (self._crc.to_bytes(4, "little").hex(), self._size)
        self._end()
        self._name = None

    # What a member's header, data and end mean beyond the check: nothing here.
    def _begin(self, name: str, kind: bytes, mode: int) -> None:
        pass

    def _write(self, piece: bytes) -> None:
        pass

    def _end(self) -> None:
        pass

    def result(self) -> bytes:
        """The manifest, once every file has been checked against it. Raises StepFailed."""
        if not self.ended or self._left:
            raise StepFailed("verify", "the tar stream ends early (no end marker)")
        if self.manifest is None:
            raise StepFailed("verify", "the tar stream holds no backup_manifest")
        _compare(self.manifest, self.files)
        return self.manifest


def _check_manifest(manifest: bytes) -> dict[str, Any]:
    text = manifest.decode()
    body, _, _ = text.rpartition('"Manifest-Checksum"')
    parsed: dict[str, Any] = json.loads(text)
    if hashlib.sha256(body.encode()).hexdigest() != parsed.get("Manifest-Checksum"):
        raise StepFailed("verify", "backup_manifest is damaged (its own checksum does not match)")
    return parsed


def _missing_wal(parsed: dict[str, Any], seen: dict[str, tuple[str, int]]) -> list[str]:
    """The WAL segments the manifest's WAL-Ranges need, absent or of the wrong size. (Their
    records are parsed by pg_waldump once unpacked: by `pghad verify`, and by a restore's check
    of its result.)"""
    sizes = {size for name, (_, size) in seen.items() if _is_segment(name)}
    segment_size = max(sizes, default=DEFAULT_SEGMENT_SIZE)
    problems = []
    for wal in parsed.get("WAL-Ranges", []):
        start, end = parse_lsn(wal["Start-LSN"]), parse_lsn(wal["End-LSN"])
        if start is None or end is None:
            problems.append(f"the manifest's WAL range {wal} does not parse")
            continue
        for segno in range(start // segment_size, max(start, end - 1) // segment_size + 1):
            name = "pg_wal/" + WalName(int(wal["Timeline"]), segno).file_name(segment_size)
            if seen.get(name, ("", 0))[1] != segment_size:
                problems.append(f"{name} is missing or short")
    return problems


def _is_segment(name: str) -> bool:
    return name.startswith("pg_wal/") and parse_name(name.removeprefix("pg_wal/")) is not None


def _compare(manifest: bytes, seen: dict[str, tuple[str, int]]) -> None:
    parsed = _check_manifest(manifest)
    problems = _missing_wal(parsed, seen)
    for entry in parsed["Files"]:
        path, found = entry["Path"], seen.get(entry["Path"])
        if found is None:
            problems.append(f"{path} is missing")
        elif found[1] != entry["Size"]:
            problems.append(f"{path} has {found[1]} bytes, the manifest says {entry['Size']}")
        elif entry.get("Checksum-Algorithm") == "CRC32C" and found[0] != entry["Checksum"]:
            problems.append(f"{path} does not match its checksum")
    if problems:
        raise StepFailed("verify", f"{len(problems)} problem(s): {'; '.join(problems[:5])}")


class TarUnpack(TarCheck):
    """TarCheck that also writes the stream's directories and files under `into` (no links, no
    names outside it, no file written twice); with `under`, only the members below that
    directory of the stream."""

    def __init__(self, into: Path, under: str | None = None) -> None:
        super().__init__()
        self.into = into
        self.under = under
        self._fd: int | None = None

    def _begin(self, name: str, kind: bytes, mode: int) -> None:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise StepFailed("unpack", f"refusing the member {name!r}: a name outside the backup")
        if self.under is not None and not path.is_relative_to(self.under):
            return
        target = self.into / path
        if kind == b"5":
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif kind in REGULAR_FILE:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(target, _NEW_FILE, mode & 0o777 or 0o600)
        else:
            raise StepFailed("unpack", f"refusing {name!r}: a member of type {kind!r}")

    def _write(self, piece: bytes) -> None:
        if self._fd is None:
            return  # a member not unpacked
        view = memoryview(piece)
        while view:
            view = view[os.write(self._fd, view) :]

    def _end(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Close the file being written, if the stream stopped inside it."""
        self._end()
