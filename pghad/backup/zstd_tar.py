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
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard

from pghad.backup.steps import StepFailed
from pghad.backup.tar_stream import TarCheck, TarUnpack
from pghad.system.commands import child_env, kill_group
from pghad.system.files import create_private, fsync_path

ARCHIVE = "base.tar.zst"
CHUNK = 1 << 20
_SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Sink(Protocol):
    """Where the compressed stream goes besides (or instead of) the local file: the bucket."""

    def write(self, data: bytes) -> int: ...


class _Both:
    """The local file and the sink, written at once."""

    def __init__(self, local: IO[bytes] | None, sink: Sink) -> None:
        self.local, self.sink = local, sink

    def write(self, data: bytes) -> int:
        if self.local is not None:
            self.local.write(data)
        return self.sink.write(data)

    def flush(self) -> None:
        if self.local is not None:
            self.local.flush()


def _compress_checked(
    source: IO[bytes], directory: Path, level: int, sink: Sink | None = None, local: bool = True
) -> StepFailed | None:
    """Compress `source` into directory/ARCHIVE (and `sink`; only there unless `local`),
    checking it on the way; write the manifest out beside it. Reads `source` to its end
    whatever happens (its writer must not block)."""
    # A content checksum in the frame: damage to the file is caught whenever it is read.
    compressor = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
    check, problem = TarCheck(), None
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(create_private(directory / ARCHIVE)) if local else None
        out: Any = raw if sink is None else _Both(raw, sink)
        writer = stack.enter_context(compressor.stream_writer(out, closefd=False))
        while chunk := source.read(CHUNK):
            writer.write(chunk)
            if problem is None:
                try:
                    check.feed(chunk)
                except StepFailed as exc:
                    problem = exc
    if problem is not None:
        return problem
    try:
        manifest = check.result()
    except StepFailed as exc:
        return exc
    if local:
        fsync_path(directory / ARCHIVE)
    with create_private(directory / "backup_manifest") as out:
        out.write(manifest)
    return None


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer, larger reads (best effort)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, _SET_PIPE_SIZE, CHUNK)


async def basebackup_to_zstd(
    argv: list[str],
    password: str,
    directory: Path,
    level: int,
    *,
    sink: Sink | None = None,
    local: bool = True,
) -> None:
    """Run pg_basebackup writing a tar to stdout (`-D - -Ft`) into directory/ARCHIVE (and
    `sink` as it comes; only there unless `local`), checked against its manifest as it
    arrives."""
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
        taking = asyncio.to_thread(_compress_checked, source, directory, level, sink, local)
        copying = asyncio.ensure_future(taking)
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


def _ahead(chunks: Iterator[bytes], depth: int = 8) -> Iterator[bytes]:
    """`chunks`, produced by a thread of their own up to `depth` ahead of the consumer: one
    core decompresses while another writes."""
    handoff: queue.Queue[bytes | BaseException | None] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        handoff.put(chunk, timeout=0.1)
                        break
                if stop.is_set():
                    return
            handoff.put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put(exc)

    producer = threading.Thread(target=produce, name="pghad-decompress", daemon=True)
    producer.start()
    try:
        while (item := handoff.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()


def verify_archive(directory: Path, wal_into: Path) -> None:
    """Check every file in ARCHIVE against its manifest; write the manifest out beside it, and
    the WAL the backup holds (which the manifest does not list) into `wal_into`, for parsing."""
    check = TarUnpack(wal_into, under="pg_wal")
    try:
        for chunk in _decompressed(directory / ARCHIVE):
            check.feed(chunk)
    finally:
        check.close()
    manifest = check.result()
    with create_private(directory / "backup_manifest") as out:
        out.write(manifest)


def unpack_archive(archive: Path, into: Path) -> None:
    """Expand `archive` into `into` (a new or empty directory), checking every file against the
    manifest on the way."""
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    unpack = TarUnpack(into)
    try:
        for chunk in _ahead(_decompressed(archive)):
            unpack.feed(chunk)
        unpack.result()
    except OSError as exc:
        raise StepFailed("unpack", f"could not write {into}: {exc}") from exc
    finally:
        unpack.close()
