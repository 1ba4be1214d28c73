"""Client-side encryption of repository objects: AES-256-GCM by chunks.

An object is a header (magic, a key check, a random nonce prefix) and a run of chunks, each
`length | ciphertext+tag` of at most CHUNK plain bytes. Each chunk's nonce is the prefix and its
number; its additional data binds the object's name, its number and whether it is the last, so
a changed byte, a reordered, dropped or swapped chunk, a truncated object or an object renamed
to another's name all fail authentication at read. The key check (an HMAC of a constant) tells
a wrong key apart from a changed object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pghad.errors import ConfigError, PghadError

MAGIC = b"PGHADE1\n"
CHECK_LEN, PREFIX_LEN, TAG_LEN = 16, 8, 16
HEADER_LEN = len(MAGIC) + CHECK_LEN + PREFIX_LEN
CHUNK = 1 << 20
_LENGTH = struct.Struct(">I")


class ObjectDamaged(PghadError):
    """An object cannot be read back as it was written: wrong key, changed or cut short."""


def parse_key(raw: bytes, where: str) -> bytes:
    """A 256-bit key: 32 raw bytes, 64 hex digits or base64 of 32 bytes."""
    text = raw.strip()
    if len(raw) == 32:
        return raw
    try:
        if len(text) == 64:
            return binascii.unhexlify(text)
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == 32:
        return decoded
    raise ConfigError(
        f"{where}: not a 256-bit key (32 raw bytes, 64 hex digits or base64 of 32 bytes); "
        "make one with: head -c 32 /dev/urandom | base64"
    )


def load_key(key_file: Path | None, key_env: str | None) -> bytes | None:
    """The configured key, or None when encryption is off; a clear error naming the setting
    when it is configured but missing or malformed."""
    if key_file is not None:
        try:
            mode = key_file.stat().st_mode
            if mode & 0o077:
                raise ConfigError(
                    f"repository.encryption_key_file {key_file}: other users can read or change "
                    f"it (mode {mode & 0o777:o}): chmod 600 {key_file}"
                )
            return parse_key(key_file.read_bytes(), f"repository.encryption_key_file {key_file}")
        except OSError as exc:
            raise ConfigError(
                f"repository.encryption_key_file {key_file}: cannot read the key: {exc.strerror}"
            ) from exc
    if key_env:
        value = os.environ.get(key_env)
        if not value:
            raise ConfigError(
                f"repository.encryption_key_env: the environment variable {key_env} is not set "
                "(it holds the repository's encryption key)"
            )
        return parse_key(value.encode(), f"repository.encryption_key_env ({key_env})")
    return None


def key_check(key: bytes) -> bytes:
    return hmac.new(key, b"pghad repository key check", hashlib.sha256).digest()[:CHECK_LEN]


def _aad(name: str, index: int, last: bool) -> bytes:
    return f"{name}\0{index}\0{int(last)}".encode()


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def encrypted_chunks(source: IO[bytes], key: bytes, name: str) -> Iterator[bytes]:
    """The encrypted form of `source`, piece by piece (one chunk read ahead to mark the last)."""
    cipher, prefix = AESGCM(key), os.urandom(PREFIX_LEN)
    yield MAGIC + key_check(key) + prefix
    index, current = 0, source.read(CHUNK)
    while True:
        following = source.read(CHUNK) if current else b""
        last = not following
        sealed = cipher.encrypt(_nonce(prefix, index), current, _aad(name, index, last))
        yield _LENGTH.pack(len(sealed)) + sealed
        if last:
            return
        index, current = index + 1, following


class EncryptingReader(io.RawIOBase):
    """A readable file of `source` encrypted, for a streaming (multipart) upload."""

    def __init__(self, source: IO[bytes], key: bytes, name: str) -> None:
        self._pieces = encrypted_chunks(source, key, name)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, out: memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buffer = piece
        size = min(len(out), len(self._buffer))
        out[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _read_exact(source: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = source.read(size - len(data))
        if not piece:
            break
        data += piece
    return data


def decrypt_stream(
    source: IO[bytes], target: IO[bytes], key: bytes | None, name: str, label: str = ""
) -> int:
    """Write the plain content of the object `name` read from `source` to `target`; returns
    the plain bytes written. Raises ObjectDamaged (naming the object, as `label` when given)
    on any mismatch."""
    where = label or name
    buffered = io.BufferedReader(_Raw(source), CHUNK)
    source = buffered
    header = _read_exact(source, HEADER_LEN)
    if not header.startswith(MAGIC):
        if key is not None:
            raise ObjectDamaged(f"{where} is not encrypted, but the repository is: refusing it")
        target.write(header)
        written = len(header)
        while piece := source.read(CHUNK):
            target.write(piece)
            written += len(piece)
        return written
    if key is None:
        raise ObjectDamaged(
            f"{where} is encrypted: set repository.encryption_key_file (or encryption_key_env) "
            "to the repository's key"
        )
    if not hmac.compare_digest(header[len(MAGIC) : len(MAGIC) + CHECK_LEN], key_check(key)):
        raise ObjectDamaged(f"{where}: wrong encryption key (it was encrypted with another key)")
    cipher, prefix = AESGCM(key), header[len(MAGIC) + CHECK_LEN :]
    index, written = 0, 0
    while True:
        length = _read_exact(source, _LENGTH.size)
        if len(length) < _LENGTH.size:
            raise ObjectDamaged(f"{where} is cut short after chunk {index}")
        (size,) = _LENGTH.unpack(length)
        if size < TAG_LEN or size > CHUNK + TAG_LEN:
            raise ObjectDamaged(f"{where} is damaged at chunk {index} (bad length)")
        sealed = _read_exact(source, size)
        last = not buffered.peek(1)
        try:
            plain = cipher.decrypt(_nonce(prefix, index), sealed, _aad(name, index, last))
        except InvalidTag as exc:
            raise ObjectDamaged(
                f"{where} was changed or damaged: chunk {index} fails authentication"
            ) from exc
        target.write(plain)
        written += len(plain)
        if last:
            return written
        index += 1


class _Raw(io.RawIOBase):
    """Any object with read(n) as a raw file, so that it can be buffered (and peeked)."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, out: memoryview) -> int:  # type: ignore[override]
        piece = self._source.read(len(out))
        out[: len(piece)] = piece
        return len(piece)


def sealed_size(plain: int) -> int:
    """The size of an object of `plain` bytes once encrypted."""
    chunks = max(1, -(-plain // CHUNK))
    return HEADER_LEN + plain + chunks * (_LENGTH.size + TAG_LEN)


def decrypt_bytes(data: bytes, key: bytes | None, name: str) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, key, name)
    return out.getvalue()


def encrypt_bytes(data: bytes, key: bytes, name: str) -> bytes:
    return b"".join(encrypted_chunks(io.BytesIO(data), key, name))
