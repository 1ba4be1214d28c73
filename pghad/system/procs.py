"""Process facts from /proc: zombies count as dead, orphans are reaped, stale locks cleared.

PID 1 on some machines does not reap orphans, so a killed postmaster can linger as a zombie and a
plain "does the PID exist" check would call it alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
DEAD_STATES = {"Z", "X", "x"}


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, T, Z, ...), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    state = process_state(pid)
    return state is not None and state not in DEAD_STATES


def is_frozen(pid: int) -> bool:
    """Stopped by a signal (SIGSTOP) or a tracer: alive, but answers nothing."""
    return process_state(pid) in ("T", "t")


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Read as root from a directory the PostgreSQL user writes: never a link, never waiting on a
# FIFO or a device (O_NONBLOCK), a regular file checked through the open descriptor.
_NOFOLLOW_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class DataDirId:
    """A data directory as opened without following links: its device, inode and owner."""

    dev: int
    ino: int
    uid: int


def data_dir_id(data_dir: Path) -> DataDirId | None:
    """The directory itself (never what a link there points to), or None when it is missing,
    a link or not a directory."""
    try:
        fd = os.open(data_dir, _NOFOLLOW_DIR)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    return DataDirId(info.st_dev, info.st_ino, info.st_uid)


def read_small(directory: Path, name: str, limit: int = 4096) -> str | None:
    """The start of a plain file in `directory`, or None: a link (at the directory or the
    file), a FIFO, a device, or a missing file is never followed, opened blocking or read."""
    try:
        dir_fd = os.open(directory, _NOFOLLOW_DIR)
    except OSError:
        return None
    try:
        fd = os.open(name, _NOFOLLOW_READ, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def postmaster_pid(data_dir: Path) -> int | None:
    text = read_small(data_dir, "postmaster.pid")
    first = (text or "").split("\n", 1)[0]
    return int(first) if first.strip().isdigit() else None


def live_postmaster(data_dir: Path) -> int | None:
    """The PID in postmaster.pid, if that process lives and really is this directory's server."""
    pid = postmaster_pid(data_dir)
    if pid is None or not is_alive(pid) or not is_postmaster_of(pid, data_dir):
        return None
    return pid


def _is_postgres_in(pid: int, ident: DataDirId) -> bool:
    """A postgres process of the directory's owner whose working directory is that directory
    (compared by device and inode: a path can be a link, an inode cannot)."""
    proc = Path(f"/proc/{pid}")
    try:
        exe_name = (proc / "exe").readlink().name
        uid = proc.stat().st_uid
        cwd = os.stat(proc / "cwd")
    except OSError:
        return False
    return (
        exe_name in ("postgres", "postmaster")
        and uid == ident.uid
        and (cwd.st_dev, cwd.st_ino) == (ident.dev, ident.ino)
    )


def is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a postgres process working in `data_dir`, run by the directory's owner.

    postmaster.pid is written by the PostgreSQL user, so the PID in it proves nothing alone.
    """
    ident = data_dir_id(data_dir)
    return ident is not None and _is_postgres_in(pid, ident)


def _process_dirs() -> Iterator[Path]:
    """/proc/<pid> of every process."""
    return (entry for entry in Path("/proc").iterdir() if entry.name.isdigit())


def _sigkill(pids: list[int]) -> int:
    """SIGKILL each of `pids` still there; how many were."""
    killed = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def processes_in(data_dir: Path) -> list[int]:
    """Live PostgreSQL processes of this data directory (postmaster and backends): run by the
    directory's owner, from a postgres executable, working in that very directory. Never
    "whatever works there": the directory could be a link the PostgreSQL user planted."""
    ident = data_dir_id(data_dir)
    if ident is None:
        return []
    found = []
    for entry in _process_dirs():
        pid = int(entry.name)
        if _is_postgres_in(pid, ident) and is_alive(pid):
            found.append(pid)
    return found


def kill_all_in(data_dir: Path) -> int:
    """SIGKILL the postmaster first, then every process still working in the data directory."""
    pid = live_postmaster(data_dir)
    return _sigkill(([pid] if pid else []) + [p for p in processes_in(data_dir) if p != pid])


# Programs that write into a data directory from outside it (their working directory is elsewhere).
WRITERS = ("pg_basebackup", "pg_rewind")


def writers_into(data_dir: Path) -> list[int]:
    """pg_basebackup or pg_rewind processes given `data_dir` as their directory: left running by
    a daemon or agent killed in the middle of a copy or a rewind (they run in their own session)."""
    target = str(data_dir).encode()
    found = []
    for entry in _process_dirs():
        try:
            exe_name = (entry / "exe").readlink().name
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if exe_name in WRITERS and target in argv:
            found.append(int(entry.name))
    return found


async def stop_writers_into(data_dir: Path, bound_s: float = 5.0) -> int:
    """SIGKILL leftover writers into `data_dir` and wait until they are gone."""
    pids = writers_into(data_dir)
    _sigkill(pids)
    deadline = time.monotonic() + bound_s
    while any(is_alive(pid) for pid in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return len(pids)


def _unlink_in(directory: Path, names: tuple[str, ...]) -> None:
    """Remove entries of a directory opened without following links (a link is removed itself)."""
    try:
        dir_fd = os.open(directory, _NOFOLLOW_DIR)
    except OSError:
        return
    try:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def clear_stale_pidfile(data_dir: Path) -> bool:
    """Remove postmaster.pid only when its PID is dead or a zombie and nothing runs in the dir."""
    if data_dir_id(data_dir) is None or not os.path.lexists(data_dir / "postmaster.pid"):
        return False
    if live_postmaster(data_dir) or processes_in(data_dir):
        return False
    _unlink_in(data_dir, ("postmaster.pid",))
    return True


def clear_stale_socket_lock(socket_dir: Path | None, port: int) -> bool:
    """Remove a Unix socket lock file left by a dead postmaster (PostgreSQL refuses to start).

    Only in the node's own socket directory: never /tmp, where anyone can plant the file.
    """
    if socket_dir is None:
        return False
    text = read_small(socket_dir, f".s.PGSQL.{port}.lock")
    if text is None:
        return False
    first = text.split("\n", 1)[0].strip()
    if first.isdigit() and is_alive(int(first)):
        return False
    _unlink_in(socket_dir, (f".s.PGSQL.{port}.lock", f".s.PGSQL.{port}"))
    return True


def become_subreaper() -> None:
    """Adopt orphaned descendants (a postmaster whose pg_ctl exited) so they can be reaped."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


# Programs pghad never starts itself but adopts as a subreaper: postmasters (pg_ctl exits),
# and pg_dumpall's shell and pg_dump when a dump is killed. Its own children are asyncio's.
ADOPTED = ("postgres", "pg_dump", "sh")


def reap_postgres_zombies() -> int:
    """Reap zombie children pghad adopted (see ADOPTED); its own children are left alone."""
    me = os.getpid()
    reaped = 0
    for entry in _process_dirs():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat.rsplit(")", 1)[1].split()
        if comm in ADOPTED and fields[0] == "Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)
                reaped += 1
    return reaped
