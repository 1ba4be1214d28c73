"""TarCheck: a tar stream followed in pieces of any size, every file checked against the
manifest, damage of every kind caught."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import google_crc32c
import pytest

from pghad.backup.steps import StepFailed
from pghad.backup.tar_stream import TarCheck, TarUnpack

FILES = {"PG_VERSION": b"18\n", "base/1/1259": bytes(range(256)) * 40, "global/empty": b""}


def manifest_for(files: dict[str, bytes], wal_ranges: str = "") -> bytes:
    entries = [
        {
            "Path": name,
            "Size": len(data),
            "Checksum-Algorithm": "CRC32C",
            "Checksum": int(google_crc32c.value(data)).to_bytes(4, "little").hex(),
        }
        for name, data in files.items()
    ]
    body = '{ "PostgreSQL-Backup-Manifest-Version": 2,\n"Files": ' + json.dumps(entries) + ",\n"
    body += wal_ranges
    return (
        body + f'"Manifest-Checksum": "{hashlib.sha256(body.encode()).hexdigest()}"}}\n'
    ).encode()


def tar_of(files: dict[str, bytes], manifest: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("base/1")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in [*files.items(), ("backup_manifest", manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def check(stream: bytes, seed: int = 0) -> bytes:
    """Feed `stream` in pieces of random sizes (1 byte to 3 blocks) and return the manifest."""
    pieces, pos, rng = TarCheck(), 0, random.Random(seed)
    while pos < len(stream):
        step = rng.randint(1, 1536)
        pieces.feed(stream[pos : pos + step])
        pos += step
    return pieces.result()


@pytest.mark.parametrize("seed", range(5))
def test_any_split_of_a_good_stream_checks_out(seed: int) -> None:
    manifest = manifest_for(FILES)
    assert check(tar_of(FILES, manifest), seed) == manifest


def test_a_changed_byte_in_a_file_is_named() -> None:
    stream = bytearray(tar_of(FILES, manifest_for(FILES)))
    at = bytes(stream).index(bytes(range(256)))
    stream[at + 10] ^= 0xFF
    with pytest.raises(StepFailed, match="base/1/1259 does not match its checksum"):
        check(bytes(stream))


def test_a_missing_or_resized_file_is_named() -> None:
    manifest = manifest_for({**FILES, "global/pg_control": b"x" * 10})
    with pytest.raises(StepFailed, match="global/pg_control is missing"):
        check(tar_of(FILES, manifest))
    bigger = {**FILES, "PG_VERSION": b"18\n\n"}
    with pytest.raises(StepFailed, match="PG_VERSION has 4 bytes, the manifest says 3"):
        check(tar_of(bigger, manifest_for(FILES)))


def test_a_damaged_header_a_cut_stream_and_no_manifest_are_caught() -> None:
    stream = tar_of(FILES, manifest_for(FILES))
    header = bytearray(stream)
    header[520] ^= 0x01  # inside the second member's name
    with pytest.raises(StepFailed, match="tar header is damaged"):
        check(bytes(header))
    with pytest.raises(StepFailed, match="ends early"):
        check(stream[: len(stream) // 2])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT):
        pass
    with pytest.raises(StepFailed, match="no backup_manifest"):
        check(out.getvalue())


def test_a_damaged_manifest_is_caught() -> None:
    manifest = manifest_for(FILES).replace(b'"Size": 3', b'"Size": 4')
    with pytest.raises(StepFailed, match="backup_manifest is damaged"):
        check(tar_of(FILES, manifest))


def test_the_wal_the_manifest_needs_must_be_there_whole() -> None:
    ranges = '"WAL-Ranges": [{ "Timeline": 1, "Start-LSN": "0/200028", "End-LSN": "0/200120" }],\n'
    manifest = manifest_for(FILES, ranges)
    segment = {"pg_wal/000000010000000000000002": bytes(1 << 20)}  # 1 MiB segments
    assert check(tar_of({**FILES, **segment}, manifest)) == manifest
    with pytest.raises(StepFailed, match=r"pg_wal/0000000100000000000000.. is missing or short"):
        check(tar_of(FILES, manifest))  # no segment at all (16 MiB assumed)
    other = {"pg_wal/000000010000000000000003": bytes(1 << 20)}
    with pytest.raises(StepFailed, match="000000010000000000000002 is missing"):
        check(tar_of({**FILES, **other}, manifest))


def test_unpack_writes_every_file_and_refuses_names_outside_and_links(tmp_path: Path) -> None:
    manifest = manifest_for(FILES)
    unpack = TarUnpack(tmp_path / "good")
    unpack.feed(tar_of(FILES, manifest))
    assert unpack.result() == manifest
    for name, data in [*FILES.items(), ("backup_manifest", manifest)]:
        assert (tmp_path / "good" / name).read_bytes() == data

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("../outside"), io.BytesIO(b""))
    with pytest.raises(StepFailed, match="a name outside the backup"):
        TarUnpack(tmp_path / "evil").feed(out.getvalue())
    assert not (tmp_path / "outside").exists()

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        link = tarfile.TarInfo("PG_VERSION")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(StepFailed, match="a member of type"):
        TarUnpack(tmp_path / "links").feed(out.getvalue())
    assert not (tmp_path / "links" / "PG_VERSION").exists()


def test_unpack_under_a_directory_writes_only_its_members_and_checks_them_all(
    tmp_path: Path,
) -> None:
    segment = {"pg_wal/000000010000000000000002": b"wal" * 1000}
    manifest = manifest_for(FILES)
    unpack = TarUnpack(tmp_path, under="pg_wal")
    unpack.feed(tar_of({**FILES, **segment}, manifest))
    assert unpack.result() == manifest
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["pg_wal/000000010000000000000002"]
    name, data = next(iter(FILES.items()))
    changed = {**FILES, name: b"x" * len(data)}
    unpack = TarUnpack(tmp_path / "again", under="pg_wal")
    unpack.feed(tar_of({**changed, **segment}, manifest))
    with pytest.raises(StepFailed, match=name):  # not written, still checked
        unpack.result()
