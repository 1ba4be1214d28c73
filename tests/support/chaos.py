"""Helpers for tests and benchmarks against a real lab: a continuous writer and node controls."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import tomlkit

from pghad.config.model import Config, NodeConfig
from pghad.lab.hosts import lab_up_hosts
from pghad.lab.local import lab_up
from pghad.nodes.conninfo import admin_conninfo
from pghad.system import procs

WRITER_TABLE = "pghad_writer"
COMMIT_BOUND_S = 2.0
OPEN_WAIT_S = 0.25  # how long one round of connection attempts waits for a writable node


def connect(config: Config, name: str, timeout: int = 2) -> psycopg.Connection:
    # Keepalives end a connection to a host that vanished (a cut link, a removed namespace)
    # within seconds: a commit abandoned there must not hold the test process at exit.
    return psycopg.connect(
        admin_conninfo(config.node(name), config.auth, connect_timeout=timeout),
        autocommit=True,
        keepalives_idle=2,
        keepalives_interval=1,
        keepalives_count=3,
        tcp_user_timeout=6000,
    )


def is_writable(config: Config, name: str) -> bool | None:
    """True for a primary, False for a standby, None when unreachable."""
    try:
        with connect(config, name, timeout=1) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return None
    return row is not None and not row[0]


def wait_for(predicate: object, timeout: float, interval: float = 0.1, what: str = "") -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def streaming_standbys(config: Config, primary: str) -> dict[str, str]:
    """application_name -> sync_state for streaming standbys of `primary` (empty if unreachable)."""
    try:
        with connect(config, primary, timeout=1) as conn:
            rows = conn.execute(
                "SELECT application_name, sync_state FROM pg_stat_replication "
                "WHERE state = 'streaming'"
            ).fetchall()
    except psycopg.Error:
        return {}
    return {str(name): str(state) for name, state in rows}


def postmaster(node: NodeConfig) -> int:
    pid = procs.live_postmaster(node.data_dir)
    assert pid is not None, f"{node.name} is not running"
    return pid


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a log file (the daemon's or an agent's); other lines are skipped."""
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events


def lose_data_dir(data_dir: Path) -> None:
    """Remove a data directory in one step: a killed postmaster's children write on for a
    moment, and a removal file by file would race them (and the daemon)."""
    gone = data_dir.with_name(data_dir.name + ".lost")
    data_dir.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)


def kill9(node: NodeConfig) -> float:
    """SIGKILL the node's postmaster; returns the monotonic time of the kill."""
    pid = postmaster(node)
    at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return at


def freeze(node: NodeConfig) -> list[int]:
    """SIGSTOP every process of the node (postmaster and backends): a hung server."""
    pids = procs.processes_in(node.data_dir)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def thaw(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@dataclass
class Commit:
    id: int
    node: str
    at: float
    wall: float = 0.0  # time.time() when COMMIT returned


@dataclass
class Writer:
    """Commits one row at a time to whichever node is writable; remembers every acknowledged id.

    A commit counts only when COMMIT returned without error. A commit that hangs (a frozen
    server) is abandoned after COMMIT_BOUND_S and not counted.
    """

    config: Config
    pause_s: float = 0.01
    acked: list[Commit] = field(default_factory=list)
    errors: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _next_id: int = 1
    _abandoned: list[psycopg.Connection] = field(default_factory=list)

    def start(self) -> Writer:
        self._ensure_table()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _ensure_table(self) -> None:
        for node in self.config.nodes:
            if is_writable(self.config, node.name):
                with connect(self.config, node.name) as conn:
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {WRITER_TABLE} "
                        "(id bigint PRIMARY KEY, node text, at timestamptz DEFAULT now())"
                    )
                    # A later writer on the same table continues the ids: no duplicate keys.
                    row = conn.execute(
                        f"SELECT coalesce(max(id), 0) FROM {WRITER_TABLE}"
                    ).fetchone()
                self._next_id = (row[0] if row else 0) + 1
                return
        raise AssertionError("no writable node to create the writer table on")

    def _open(self) -> tuple[psycopg.Connection, str] | None:
        """A connection to the writable node; every node is tried at once, as a client with
        several hosts would, so a node that does not answer (no RST from a stopped container's
        address) does not delay finding the new primary."""
        pool = ThreadPoolExecutor(max_workers=len(self.config.nodes))
        futures = [pool.submit(self._try, node.name) for node in self.config.nodes]
        pool.shutdown(wait=False)
        try:
            for future in as_completed(futures, timeout=OPEN_WAIT_S):
                found = future.result()
                if found is not None:
                    self._release(futures, keep=future)
                    return found
        except FutureTimeout:
            pass  # a node that does not answer yet: try again soon rather than wait for it
        self._release(futures, keep=None)
        return None

    def _release(
        self,
        futures: list[Future[tuple[psycopg.Connection, str] | None]],
        keep: Future[tuple[psycopg.Connection, str] | None] | None,
    ) -> None:
        for other in futures:
            if other is not keep:  # answered later, or a second writable node: not ours
                other.add_done_callback(lambda done: self._drop(done.result()))

    def _try(self, name: str) -> tuple[psycopg.Connection, str] | None:
        try:
            conn = connect(self.config, name, timeout=1)
        except psycopg.Error:
            return None
        try:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error:
            self._drop((conn, name))
            return None
        if row is not None and not row[0]:
            return conn, name
        conn.close()
        return None

    @staticmethod
    def _drop(current: tuple[psycopg.Connection, str] | None) -> None:
        if current is not None:
            with contextlib.suppress(psycopg.Error):
                current[0].close()

    def _run(self) -> None:
        pool = ThreadPoolExecutor(max_workers=1)
        current: tuple[psycopg.Connection, str] | None = None
        while not self._stop.is_set():
            if current is None:
                current = self._open()
                if current is None:
                    time.sleep(0.02)
                    continue
            conn, name = current
            row_id = self._next_id
            future = pool.submit(
                conn.execute,
                f"INSERT INTO {WRITER_TABLE} (id, node) VALUES (%s, %s)",
                (row_id, name),
            )
            try:
                future.result(timeout=COMMIT_BOUND_S)
            except FutureTimeout:
                # The connection is stuck in a frozen server: abandon it with its thread.
                pool.shutdown(wait=False)
                pool = ThreadPoolExecutor(max_workers=1)
                self._abandoned.append(current[0])
                self.failures.append((time.monotonic(), f"{current[1]}: commit hung"))
                current = None
                self.errors += 1
                self._next_id += 1
                continue
            except psycopg.Error as exc:
                self.failures.append((time.monotonic(), f"{current[1]}: {exc}"[:120]))
                self._drop(current)
                current = None
                self.errors += 1
                self._next_id += 1
                continue
            self.acked.append(Commit(row_id, name, time.monotonic(), time.time()))
            self._next_id += 1
            time.sleep(self.pause_s)
        pool.shutdown(wait=False)
        self._drop(current)
        for conn in self._abandoned:
            self._drop((conn, ""))

    def first_commit_on(self, node: str, after: float) -> float | None:
        return next((c.at for c in self.acked if c.node == node and c.at >= after), None)

    def missing_on(self, node: str) -> list[int]:
        """Acknowledged ids that `node` does not have."""
        ids = [c.id for c in self.acked]
        with connect(self.config, node) as conn:
            rows = conn.execute(
                f"SELECT id FROM {WRITER_TABLE} WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        present = {r[0] for r in rows}
        return [i for i in ids if i not in present]

    def longest_gap(self, start: float, end: float) -> float:
        times = [c.at for c in self.acked if start <= c.at <= end]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def set_config_value(path: Path, section: str, key: str, value: str) -> None:
    """Set `key = value` in [section] of a config.toml (value is TOML), keeping comments."""
    doc = tomlkit.parse(path.read_text())
    table = doc.setdefault(section, tomlkit.table())
    table[key] = tomlkit.parse(f"v = {value}")["v"]
    path.write_text(tomlkit.dumps(doc))


def scratch_lab(first_port: int, api_port: int) -> tuple[Path, Path]:
    """A new lab in a fresh directory under /tmp (reachable by the PostgreSQL user).

    Returns (the directory to remove afterwards, the lab's config.toml).
    """
    procs.become_subreaper()
    root = Path(tempfile.mkdtemp(prefix="pghad-bench-", dir="/tmp"))
    root.chmod(0o755)
    lab_up(root / "lab", first_port=first_port, api_port=api_port)
    return root, root / "lab" / "config.toml"


def scratch_hosts_lab(first_port: int) -> tuple[Path, Path, str]:
    """Like scratch_lab, on three namespace hosts (`lab up --hosts`); also returns the daemon
    host's namespace, to start the daemon in."""
    procs.become_subreaper()
    root = Path(tempfile.mkdtemp(prefix="pghad-bench-", dir="/tmp"))
    root.chmod(0o755)
    net = lab_up_hosts(root / "lab", first_port=first_port)
    return root, root / "lab" / "config.toml", str(net["hosts"]["witness"]["netns"])


def start_daemon(
    config_path: Path, log_path: Path, netns: str | None = None
) -> subprocess.Popen[bytes]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "pghad", "run", "--config", str(config_path)],
            stdout=log,
            stderr=log,
        )
