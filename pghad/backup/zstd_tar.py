"""zstd backups: pg_basebackup's tar stream compressed as it arrives, verified and unpacked here.

The PostgreSQL build may lack zstd, so pghad compresses with the zstandard library (all cores).
pg_verifybackup cannot read such a file either: the verify step reads the archive once, checks
every file's size and CRC32C against the manifest (the stream's last member) and keeps the
manifest beside it, where incrementals find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
import tarfile
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


async def basebackup_to_zstd(argv: list[str], password: str, directory: Path) -> None:
    """Run pg_basebackup writing a tar to stdout (`-D - -Ft`), into directory/ARCHIVE."""
    target = directory / ARCHIVE
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=child_env({"PGPASSWORD": password}),
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    # A content checksum in the frame: damage to the file is caught whenever it is read.
    compressor = zstandard.ZstdCompressor(level=LEVEL, threads=-1, write_checksum=True)
    try:
        with create_private(target) as raw, compressor.stream_writer(raw) as writer:
            while chunk := await process.stdout.read(CHUNK):
                await asyncio.to_thread(writer.write, chunk)
    except BaseException:
        await kill_group(process)
        errors.cancel()
        raise
    message = (await errors).decode(errors="replace")
    await asyncio.to_thread(fsync_path, target)
    if await process.wait() != 0:
        lines = [ln for ln in message.strip().splitlines() if "WARNING" not in ln]
        raise StepFailed("pg_basebackup", f"pg_basebackup failed: {' / '.join(lines)[-800:]}")


def _checksum(handle: IO[bytes]) -> tuple[str, int]:
    crc, size = 0, 0
    while block := handle.read(CHUNK):
        crc = int(google_crc32c.extend(crc, block))
        size += len(block)
    return crc.to_bytes(4, "little").hex(), size  # as PostgreSQL writes it in the manifest


def _check_manifest(manifest: bytes) -> dict[str, Any]:
    text = manifest.decode()
    body, _, _ = text.rpartition('"Manifest-Checksum"')
    parsed: dict[str, Any] = json.loads(text)
    if hashlib.sha256(body.encode()).hexdigest() != parsed.get("Manifest-Checksum"):
        raise StepFailed("verify", "backup_manifest is damaged (its own checksum does not match)")
    return parsed


def _take(
    tar: tarfile.TarFile, member: tarfile.TarInfo, seen: dict[str, tuple[str, int]]
) -> bytes | None:
    """Note a file's checksum and size in `seen`; returns the manifest's content, else None."""
    if not member.isfile():
        return None
    handle = tar.extractfile(member)
    assert handle is not None
    if member.name == "backup_manifest":
        return handle.read()
    seen[member.name] = _checksum(handle)
    return None


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


def _read_archive(archive: Path) -> bytes:
    """Read `archive` once and check every file against the manifest (the stream's last
    member); returns the manifest."""
    manifest: bytes | None = None
    seen: dict[str, tuple[str, int]] = {}
    try:
        with (
            archive.open("rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar,
        ):
            for member in tar:
                manifest = _take(tar, member, seen) or manifest
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise StepFailed("verify", f"{archive} is damaged: {exc}") from exc
    if manifest is None:
        raise StepFailed("verify", f"{archive} holds no backup_manifest")
    _compare(manifest, seen)
    return manifest


def verify_archive(directory: Path) -> None:
    """Check every file in ARCHIVE against its manifest; write the manifest out beside it."""
    manifest = _read_archive(directory / ARCHIVE)
    with create_private(directory / "backup_manifest") as out:
        out.write(manifest)


def unpack_archive(archive: Path, into: Path) -> None:
    """Expand `archive` into `into` (a new directory): decompressed here, unpacked by tar (twice
    as fast as Python's tarfile). The caller verifies the result (pg_verifybackup)."""
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    problem = None
    with subprocess.Popen(
        ["tar", "-x", "--no-same-owner", "-C", str(into)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as tar:
        assert tar.stdin is not None and tar.stderr is not None
        try:
            with archive.open("rb") as raw:
                zstandard.ZstdDecompressor().copy_stream(raw, tar.stdin, write_size=CHUNK)
        except (zstandard.ZstdError, BrokenPipeError) as exc:
            problem = str(exc)
        finally:
            with contextlib.suppress(BrokenPipeError):
                tar.stdin.close()
            message = tar.stderr.read().decode(errors="replace").strip()
    if problem or tar.returncode != 0:
        raise StepFailed("unpack", f"{archive} is damaged: {problem or message}")
