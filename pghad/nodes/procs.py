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
import time
from collections.abc import Iterator
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


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except (FileNotFoundError, PermissionError):
        return None
    return int(first) if first.strip().isdigit() else None


def live_postmaster(data_dir: Path) -> int | None:
    """The PID in postmaster.pid, if that process lives and really is this directory's server."""
    pid = postmaster_pid(data_dir)
    if pid is None or not is_alive(pid) or not is_postmaster_of(pid, data_dir):
        return None
    return pid


def is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a postgres process working in `data_dir`, run by the directory's owner.

    postmaster.pid is written by the PostgreSQL user, so the PID in it proves nothing alone.
    """
    proc = Path(f"/proc/{pid}")
    try:
        exe_name = (proc / "exe").readlink().name
        cwd = (proc / "cwd").readlink()
        uid = proc.stat().st_uid
        owner = data_dir.stat().st_uid
    except OSError:
        return False
    return exe_name in ("postgres", "postmaster") and cwd == data_dir.resolve() and uid == owner


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
    """Live processes whose working directory is the data directory (postmaster and backends)."""
    target = data_dir.resolve()
    found = []
    for entry in _process_dirs():
        try:
            cwd = (entry / "cwd").readlink()
        except OSError:
            continue
        pid = int(entry.name)
        if cwd == target and is_alive(pid):
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


def clear_stale_pidfile(data_dir: Path) -> bool:
    """Remove postmaster.pid only when its PID is dead or a zombie and nothing runs in the dir."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists() or live_postmaster(data_dir) or processes_in(data_dir):
        return False
    pid_file.unlink(missing_ok=True)
    return True


def clear_stale_socket_lock(socket_dir: Path, port: int) -> bool:
    """Remove a Unix socket lock file left by a dead postmaster (PostgreSQL refuses to start)."""
    lock = socket_dir / f".s.PGSQL.{port}.lock"
    try:
        first = lock.read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError):
        return False
    if first.isdigit() and is_alive(int(first)):
        return False
    lock.unlink(missing_ok=True)
    (socket_dir / f".s.PGSQL.{port}").unlink(missing_ok=True)
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
