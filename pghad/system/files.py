"""Files root writes where the PostgreSQL user could have planted a link: never followed.

pghad runs as root; data directories and their parents belong to the PostgreSQL OS user, who
could put a symlink (or a hard link) where pghad expects a log file or a config file. Every such
file is opened relative to a directory opened without following links, refused unless it is a
plain file with one link, and chowned through its descriptor.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pghad.errors import NodeError
from pghad.system import beneath

_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def _directory(path: Path) -> Iterator[int]:
    try:
        # No link another user could have planted, at any component of the path.
        fd = beneath.open_directory(path)
    except OSError as exc:
        raise NodeError(f"refusing {path}: not a plain directory ({exc.strerror})") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _open_plain(dir_fd: int, path: Path, flags: int, mode: int) -> int:
    try:
        # O_NONBLOCK: a FIFO planted there is refused below, not waited on.
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(path.name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        raise NodeError(f"refusing {path}: {exc.strerror} (a link pghad did not make?)") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise NodeError(f"refusing {path}: not a plain file with a single link")
    return fd


def write_file(path: Path, data: bytes, owner: tuple[int, int] | None, mode: int = 0o600) -> None:
    """Create or replace the contents of `path`, owned by `owner` (uid, gid) when given."""
    with _directory(path.parent) as dir_fd:
        fd = _open_plain(dir_fd, path, os.O_WRONLY | os.O_CREAT, mode)
        try:
            os.ftruncate(fd, 0)  # only once it is known to be a plain file of one link
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            os.write(fd, data)
        finally:
            os.close(fd)


def ensure_file(path: Path, owner: tuple[int, int] | None, mode: int = 0o600) -> None:
    """Create `path` if missing (its contents kept), owned by `owner`."""
    with _directory(path.parent) as dir_fd:
        fd = _open_plain(dir_fd, path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode)
        try:
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)


def read_text(path: Path, errors: str = "strict") -> str | None:
    """The text of a plain file, None when it does not exist; links are refused."""
    with _directory(path.parent) as dir_fd:
        try:
            fd = _open_plain(dir_fd, path, os.O_RDONLY, 0)
        except NodeError:
            if not os.path.lexists(path):
                return None
            raise
        with os.fdopen(fd, "rb") as handle:
            return handle.read().decode(errors=errors)


def remove_in(directory: Path, name: str) -> None:
    """Remove `name` from a directory opened without following links (a link itself)."""
    with _directory(directory) as dir_fd, contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def remove(path: Path) -> None:
    """Remove a file (a link is removed itself, never its target)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def create_private(path: Path) -> BinaryIO:
    """A new file only root can read (mode 0600 from the start, never a link); replaces a
    leftover of an earlier attempt.
    """
    remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def owner_ids(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's own data (a rename is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
