"""The repository's chunked AES-256-GCM: what it reads back, and every way it refuses."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, cast

import pytest

from pghad.backup.repository.crypto import (
    CHUNK,
    HEADER_LEN,
    ObjectDamaged,
    decrypt_bytes,
    encrypt_bytes,
    load_key,
    parse_key,
    sealed_size,
)
from pghad.errors import ConfigError

KEY = bytes(range(32))
NAME = "backups/completo-2026-12-07/base.tar.zst"


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_round_trip_at_chunk_edges(size: int) -> None:
    data = os.urandom(size)
    sealed = encrypt_bytes(data, KEY, NAME)
    if size >= 16:  # 16 random bytes appear in the ciphertext by chance with no real odds
        assert data[:16] not in sealed
    assert decrypt_bytes(sealed, KEY, NAME) == data


def test_each_changed_byte_is_caught() -> None:
    sealed = bytearray(encrypt_bytes(os.urandom(CHUNK + 100), KEY, NAME))
    for position in (HEADER_LEN + 10, len(sealed) // 2, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        with pytest.raises(ObjectDamaged, match="changed or damaged"):
            decrypt_bytes(bytes(damaged), KEY, NAME)


def test_a_cut_short_object_is_caught_at_a_chunk_boundary() -> None:
    sealed = encrypt_bytes(os.urandom(2 * CHUNK + 5), KEY, NAME)
    first_chunk_end = HEADER_LEN + 4 + CHUNK + 16
    with pytest.raises(ObjectDamaged):
        decrypt_bytes(sealed[:first_chunk_end], KEY, NAME)  # ends where a chunk ends


def test_an_object_under_another_name_is_refused() -> None:
    sealed = encrypt_bytes(b"segment one", KEY, "wal/000000010000000000000001.zst")
    with pytest.raises(ObjectDamaged, match="fails authentication"):
        decrypt_bytes(sealed, KEY, "wal/000000010000000000000002.zst")


def test_wrong_and_missing_keys_are_told_apart() -> None:
    sealed = encrypt_bytes(b"rows", KEY, NAME)
    with pytest.raises(ObjectDamaged, match="wrong encryption key"):
        decrypt_bytes(sealed, bytes(32), NAME)
    with pytest.raises(ObjectDamaged, match="encryption_key_file"):
        decrypt_bytes(sealed, None, NAME)
    with pytest.raises(ObjectDamaged, match="not encrypted"):
        decrypt_bytes(b"plain bytes", KEY, NAME)
    assert decrypt_bytes(b"plain bytes", None, NAME) == b"plain bytes"


def test_keys_are_read_as_raw_hex_or_base64_and_bad_ones_name_the_setting(tmp_path: Path) -> None:
    assert parse_key(KEY, "k") == KEY
    assert parse_key(KEY.hex().encode() + b"\n", "k") == KEY
    assert parse_key(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "k") == KEY
    with pytest.raises(ConfigError, match=r"repository\.encryption_key_file .*not a 256-bit key"):
        bad = tmp_path / "short.key"
        bad.write_text("abc")
        bad.chmod(0o600)
        load_key(bad, None)
    shared = tmp_path / "shared.key"
    shared.write_text(KEY.hex())
    shared.chmod(0o640)
    with pytest.raises(ConfigError, match=r"other users can read or change it .*chmod 600"):
        load_key(shared, None)
    shared.chmod(0o600)
    assert load_key(shared, None) == KEY
    with pytest.raises(ConfigError, match=r"repository\.encryption_key_file .*cannot read"):
        load_key(tmp_path / "absent.key", None)
    with pytest.raises(ConfigError, match="PGHAD_TEST_NO_SUCH_KEY is not set"):
        load_key(None, "PGHAD_TEST_NO_SUCH_KEY")
    assert load_key(None, None) is None


def test_a_reader_that_returns_short_reads_still_decrypts() -> None:
    data = os.urandom(CHUNK * 2 + 3)
    sealed = encrypt_bytes(data, KEY, NAME)

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.source = io.BytesIO(sealed)

        def read(self, size: int = -1) -> bytes:
            return self.source.read(min(size if size > 0 else 7000, 7000))

    out = io.BytesIO()
    from pghad.backup.repository.crypto import decrypt_stream

    decrypt_stream(cast(IO[bytes], Trickle()), out, KEY, NAME)
    assert out.getvalue() == data


@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, 5 * CHUNK])
def test_sealed_size_is_what_encryption_writes(size: int) -> None:
    assert sealed_size(size) == len(encrypt_bytes(bytes(size), KEY, NAME))
