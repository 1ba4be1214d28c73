"""zstd backups: pg_basebackup's tar stream compressed and checked as it arrives, in one pass.

The PostgreSQL build may lack zstd, so pghad compresses with the zstandard library (all cores).
pg_verifybackup cannot read such a file either: every pass over the stream (taking, verifying,
unpacking) follows the tar's members, checks every file's size and CRC32C against the manifest
(the stream's last member) and keeps the manifest beside the archive, where incrementals find it.
The frame carries a content checksum, so damage to the file itself is caught at every read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import google_crc32c
import zstandard

from pghad.commands import child_env, kill_group
from pghad.files import create_private, fsync_path

from .steps import StepFailed

ARCHIVE = "base.tar.zst"
LEVEL = 3
CHUNK = 1 << 20
_SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)
BLOCK = 512


class TarCheck:
    """Follows a tar stream fed in pieces of any size: every file's size and CRC32C, and the
    manifest (pg_basebackup writes plain ustar members, names under 100 bytes)."""

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
        self._name = None
        if header[156:157] in (b"0", b"\0"):
            prefix = header[345:500].split(b"\0", 1)[0].decode()
            name = header[:100].split(b"\0", 1)[0].decode()
            self._name = f"{prefix}/{name}" if prefix else name
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
        self._name = None

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


def _compare(manifest: bytes, seen: dict[str, tuple[str, int]]) -> None:
    problems = []
    for entry in _check_manifest(manifest)["Files"]:
        path, found = entry["Path"], seen.get(entry["Path"])
        if found is None:
            problems.append(f"{path} is missing")
        elif found[1] != entry["Size"]:
            problems.append(f"{path} has {found[1]} bytes, the manifest says {entry['Size']}")
        elif entry.get("Checksum-Algorithm") == "CRC32C" and found[0] != entry["Checksum"]:
            problems.append(f"{path} does not match its checksum")
    if problems:
        raise StepFailed("verify", f"{len(problems)} problem(s): {'; '.join(problems[:5])}")


def _compress_checked(source: IO[bytes], directory: Path) -> StepFailed | None:
    """Compress `source` into directory/ARCHIVE, checking it on the way; write the manifest
    out beside it. Reads `source` to its end whatever happens (its writer must not block)."""
    # A content checksum in the frame: damage to the file is caught whenever it is read.
    compressor = zstandard.ZstdCompressor(level=LEVEL, threads=-1, write_checksum=True)
    check, problem = TarCheck(), None
    with create_private(directory / ARCHIVE) as raw, compressor.stream_writer(raw) as writer:
        while chunk := source.read(CHUNK):
            writer.write(chunk)
            if problem is None:
                try:
                    check.feed(chunk)
                except StepFailed as exc:
                    problem = exc
    try:
        manifest = check.result()
    except StepFailed as exc:
        return problem or exc
    fsync_path(directory / ARCHIVE)
    with create_private(directory / "backup_manifest") as out:
        out.write(manifest)
    return None


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer, larger reads (best effort)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _SET_PIPE_SIZE, CHUNK)


async def basebackup_to_zstd(argv: list[str], password: str, directory: Path) -> None:
    """Run pg_basebackup writing a tar to stdout (`-D - -Ft`) into directory/ARCHIVE, checked
    against its manifest as it arrives."""
    read_fd, write_fd = os.pipe()
    _grow_pipe(write_fd)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=write_fd,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env=child_env({"PGPASSWORD": password}),
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    assert process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    with open(read_fd, "rb", buffering=CHUNK) as source:
        # The thread runs until the pipe ends: shielded, so that on cancellation the program is
        # killed (ending the pipe) and the thread finished before the pipe is closed.
        copying = asyncio.ensure_future(asyncio.to_thread(_compress_checked, source, directory))
        try:
            problem = await asyncio.shield(copying)
        except BaseException:
            await kill_group(process)
            errors.cancel()
            with contextlib.suppress(BaseException):
                await copying
            raise
    message = (await errors).decode(errors="replace")
    if await process.wait() != 0:
        lines = [ln for ln in message.strip().splitlines() if "WARNING" not in ln]
        raise StepFailed("pg_basebackup", f"pg_basebackup failed: {' / '.join(lines)[-800:]}")
    if problem is not None:
        raise problem


def _decompressed(archive: Path) -> Iterator[bytes]:
    try:
        with archive.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            while chunk := reader.read(CHUNK):
                yield chunk
    except zstandard.ZstdError as exc:
        raise StepFailed("verify", f"{archive} is damaged: {exc}") from exc


def verify_archive(directory: Path) -> None:
    """Check every file in ARCHIVE against its manifest; write the manifest out beside it."""
    check = TarCheck()
    for chunk in _decompressed(directory / ARCHIVE):
        check.feed(chunk)
    manifest = check.result()
    with create_private(directory / "backup_manifest") as out:
        out.write(manifest)


def unpack_archive(archive: Path, into: Path) -> None:
    """Expand `archive` into `into` (a new or empty directory), checking every file against the
    manifest on the way: decompressed and checked here, written by tar (twice as fast as
    Python's tarfile)."""
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    check, problem = TarCheck(), None
    with subprocess.Popen(
        ["tar", "-x", "--no-same-owner", "-C", str(into)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as tar:
        assert tar.stdin is not None and tar.stderr is not None
        try:
            for chunk in _decompressed(archive):
                tar.stdin.write(chunk)
                check.feed(chunk)
            check.result()
        except (StepFailed, BrokenPipeError) as exc:
            problem = exc
        finally:
            with contextlib.suppress(BrokenPipeError):
                tar.stdin.close()
            message = tar.stderr.read().decode(errors="replace").strip()
    if tar.returncode != 0:
        raise StepFailed("unpack", f"{archive}: tar failed: {message or problem}")
    if problem is not None:
        raise StepFailed("verify", f"{archive}: {problem}")
