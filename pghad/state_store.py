"""Small files in the state directory, written atomically (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import fcntl
import json
import os
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


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class EventJournal:
    """The last `limit` events as JSON lines in the state directory."""

    def __init__(self, path: Path, limit: int = 2000) -> None:
        self.path = path
        self.limit = limit
        self._count: int | None = None

    def append(self, event: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._count is None:
            self._count = len(self.read(self.limit * 2))
        with self.path.open("a") as handle:
            handle.write(json.dumps(event, default=str) + "\n")
        self._count += 1
        if self._count > self.limit * 2:
            kept = self.read(self.limit)
            write_atomic(self.path, "".join(json.dumps(e, default=str) + "\n" for e in kept))
            self._count = len(kept)

    def read(self, limit: int = 100) -> list[dict[str, Any]]:
        try:
            with self.path.open() as handle:
                lines = deque(handle, maxlen=limit)
        except FileNotFoundError:
            return []
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
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = (state_dir / "daemon.lock").open("a+")
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
