"""Small files in the state directory, written atomically (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
from collections import deque
from pathlib import Path
from typing import IO, Any

from pghad.errors import SetupError


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temp file of its own (O_EXCL): two writers at once never rename each other's file away.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temp file behind
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_private(path: Path, flags: int) -> IO[str]:
    """A file of the state directory, created 0600; a link, a FIFO or a file with other links
    is refused (SetupError naming it), never followed or waited on."""
    flags |= os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise SetupError(
            f"refusing {path}: {exc.strerror} (a link planted there?): remove it; the state "
            "directory must be root's alone"
        ) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid not in (0, os.geteuid()):
        os.close(fd)
        raise SetupError(
            f"refusing {path}: not a plain file of pghad's with a single link: remove it"
        )
    os.fchmod(fd, 0o600)  # a file an earlier version made 0644 too
    os.set_blocking(fd, True)
    return os.fdopen(fd, "r+" if flags & os.O_RDWR else "a")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object pghad wrote; None when missing, damaged, or not pghad's own plain file (a
    link, a FIFO, or a file another user put there is never trusted, followed or waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid not in (0, os.geteuid()):
            return None
        try:
            data = json.loads(handle.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    return data if isinstance(data, dict) else None


class EventJournal:
    """The last `limit` events as JSON lines in the state directory."""

    def __init__(self, path: Path, limit: int = 2000) -> None:
        self.path = path
        self.limit = limit
        self._count: int | None = None

    def append(self, event: dict[str, Any]) -> None:
        self.append_all([event])

    def append_all(self, events: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._count is None:
            self._count = len(self.read(self.limit * 2))
        with open_private(self.path, os.O_WRONLY | os.O_APPEND) as handle:
            handle.write("".join(json.dumps(e, default=str) + "\n" for e in events))
        self._count += len(events)
        if self._count > self.limit * 2:
            kept = self.read(self.limit)
            write_atomic(self.path, "".join(json.dumps(e, default=str) + "\n" for e in kept))
            self._count = len(kept)

    def read(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # missing, or a link pghad did not make
            return []
        with os.fdopen(fd, errors="replace") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return []
            lines = deque(handle, maxlen=limit)
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def hold_daemon_lock(state_dir: Path) -> IO[str]:
    """One daemon per state directory: a second `pghad run` on it is refused, naming the first.

    The lock lasts as long as the returned file stays open (the daemon's lifetime).
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = open_private(state_dir / "daemon.lock", os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SetupError(
            f"another pghad (pid {holder}) already runs on the state directory {state_dir}: "
            "stop it first (one daemon per cluster)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
