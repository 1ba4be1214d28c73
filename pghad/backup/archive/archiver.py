"""The continuous WAL archive: pg_receivewal on pghad's host, following whichever node is primary.

pg_receivewal writes into `incoming/` through a physical replication slot on the primary (so the
primary keeps WAL the archive has not got yet). Each round, finished segments are compressed
into the archive directory. When another node becomes primary, pg_receivewal is restarted
against it; it resumes from its last partial segment and follows the timeline switch, writing
the new timeline's history file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pghad.backup.archive.shipping import Shipping
from pghad.backup.archive.wal_files import (
    archived,
    compress_file,
    finished_in_incoming,
    incoming_dir,
    parse_name,
    stored_name,
)
from pghad.backup.steps import make_private_dir
from pghad.config.model import Config, NodeConfig
from pghad.decide.observation import ClusterView, format_lsn
from pghad.decide.sync_names import ARCHIVE
from pghad.nodes.conninfo import admin_conninfo, replication_conninfo
from pghad.system.commands import child_env, kill_group

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
FINAL_SHIP_S = 30.0
GONE = "has already been removed"  # the primary no longer has the WAL the archive asks for

Emit = Callable[..., None]


@dataclass
class ArchiveState:
    """What the archive has, for status, metrics and `pghad check`."""

    source: str | None = None
    streaming: bool = False
    flushed_lsn: int | None = None
    lag_bytes: int | None = None
    lag_s: float | None = None
    segments: int = 0
    stored_bytes: int = 0
    last_error: str | None = None
    # WAL stored here that the bucket does not have yet (repository.type = "s3"), its bound.
    spool_bytes: int = 0
    spool_alert_bytes: int | None = None
    upload_error: str | None = None
    caught_up_at: float | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "streaming": self.streaming,
            "flushed_lsn": format_lsn(self.flushed_lsn) if self.flushed_lsn is not None else None,
            "lag_bytes": self.lag_bytes,
            "lag_s": round(self.lag_s, 3) if self.lag_s is not None else None,
            "segments": self.segments,
            "stored_bytes": self.stored_bytes,
            "last_error": self.last_error,
            **(
                {
                    "spool_bytes": self.spool_bytes,
                    "spool_alert_bytes": self.spool_alert_bytes,
                    "upload_error": self.upload_error,
                }
                if self.spool_alert_bytes is not None
                else {}
            ),
        }


class Archiver:
    def __init__(self, config: Callable[[], Config], bin_dir: Path, emit: Emit) -> None:
        self._config = config
        self.bin_dir = bin_dir
        self.emit = emit
        self.state = ArchiveState()
        self._task: asyncio.Task[None] | None = None
        self._storing: asyncio.Task[None] | None = None
        self._slot_checked: set[str] = set()  # standbys known to hold no archive slot
        self._chores: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._not_before = 0.0
        self._shipping = Shipping(self.state, emit)

    @property
    def config(self) -> Config:
        return self._config()

    @property
    def directory(self) -> Path:
        return self.config.archive.path(self.config.backup.dir)

    @property
    def enabled(self) -> bool:
        return self.config.archive.enabled

    def status(self) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        return {"dir": str(self.directory), **self.state.as_dict()}

    def follow(self, view: ClusterView, primary: str | None, now: float) -> None:
        """Called every round: stream from `primary` when it is writable; restart on a change."""
        if not self.enabled:
            return
        self._note_progress(view, primary, now)
        running = self._task is not None and not self._task.done()
        wanted = primary if primary is not None and view.nodes.get(primary) else None
        if wanted is not None and not view[wanted].writable:
            wanted = None
        if running and self.state.source != wanted and wanted is not None:
            assert self._task is not None
            self._task.cancel()  # the primary changed: follow the new one
            running = False
        if not running and wanted is not None and time.monotonic() >= self._not_before:
            self.state.source = wanted
            self._task = asyncio.create_task(self._stream(self.config.node(wanted)))
        for name, obs in view.nodes.items():
            if name != wanted and obs.is_standby and name not in self._slot_checked:
                self._slot_checked.add(name)
                chore = asyncio.create_task(self._drop_slot(name))
                self._chores.add(chore)
                chore.add_done_callback(self._chores.discard)
        for name, obs in view.nodes.items():
            if obs.writable:
                self._slot_checked.discard(name)  # a primary again: check when it is a standby
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store())

    async def stop(self) -> None:
        for task in (self._task, self._storing, *self._chores):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.enabled and self.config.repository.is_s3:
            # What pg_receivewal wrote last (the partial segment too) goes to the bucket before
            # the daemon exits, when the bucket answers in time; otherwise it waits here.
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(self.store_finished), FINAL_SHIP_S)

    async def _store(self) -> None:
        try:
            await asyncio.to_thread(self.store_finished)
        except OSError as exc:  # a full disk: pg_receivewal's files stay until there is room
            self.state.last_error = f"storing archived WAL failed: {exc}"
            self.emit("archive_store_failed", level="error", error=str(exc))

    def _note_progress(self, view: ClusterView, primary: str | None, now: float) -> None:
        obs = view.nodes.get(primary) if primary else None
        replica = obs.replica(ARCHIVE) if obs is not None and obs.writable else None
        state = self.state
        state.streaming = replica is not None and replica.streaming
        if replica is None or obs is None or obs.current_lsn is None:
            state.lag_bytes = None
        else:
            state.flushed_lsn = replica.flush_lsn
            state.lag_bytes = max(0, obs.current_lsn - (replica.flush_lsn or 0))
        if state.lag_bytes == 0:
            state.caught_up_at = now
        if state.caught_up_at is not None and state.lag_bytes is not None:
            state.lag_s = now - state.caught_up_at
        else:
            state.lag_s = None

    async def _stream(self, node: NodeConfig) -> None:
        config = self.config
        incoming = incoming_dir(self.directory)
        make_private_dir(self.directory)
        incoming.mkdir(exist_ok=True, mode=0o700)
        started = time.monotonic()
        error = ""
        try:
            await self._ensure_slot(node)
            error = await self._receive(node, incoming, config)
        except (OSError, psycopg.Error) as exc:
            error = str(exc).strip()
        if GONE in error:
            await asyncio.to_thread(self._set_aside_partials)
            self.emit(
                "archive_gap",
                level="error",
                node=node.name,
                error=error,
                hint="the archive has a gap: take a full backup (pghad backup --full)",
            )
        lasted = time.monotonic() - started
        self._failures = 0 if lasted > 60 else self._failures + 1
        wait = RESTART_BACKOFF_S[min(self._failures, len(RESTART_BACKOFF_S) - 1)]
        self._not_before = time.monotonic() + wait
        self.state.last_error = error or "pg_receivewal exited"
        self.emit(
            "archive_stopped",
            level="warning",
            node=node.name,
            error=self.state.last_error,
            retry_in_s=wait,
        )

    async def _receive(self, node: NodeConfig, incoming: Path, config: Config) -> str:
        conninfo = replication_conninfo(node, config.auth, ARCHIVE, with_password=False)
        argv = [
            str(self.bin_dir / "pg_receivewal"),
            "-D", str(incoming),
            "--slot", config.archive.slot,
            "--no-loop",
            "--no-password",
            "--status-interval", "1",
            # fsync and report every write: the archive's position is what is on its disk.
            "--synchronous",
            "-d", conninfo,
        ]  # fmt: skip
        env = child_env({"PGPASSWORD": config.auth.replication_password})
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.emit("archive_started", node=node.name, slot=config.archive.slot)
        assert process.stderr is not None
        try:
            err = await process.stderr.read()
            await process.wait()
        except asyncio.CancelledError:
            await kill_group(process)
            raise
        lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        return " / ".join(lines[-3:])

    async def _ensure_slot(self, node: NodeConfig) -> None:
        """The slot on the primary, reserving WAL from now on."""
        slot = self.config.archive.slot
        conninfo = admin_conninfo(node, self.config.auth)
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            await conn.execute(
                "SELECT pg_create_physical_replication_slot(%(s)s, true) WHERE NOT EXISTS "
                "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %(s)s)",
                {"s": slot},
            )

    async def _drop_slot(self, name: str) -> None:
        """A slot left on a standby (a former primary) would keep its WAL forever: drop it."""
        slot = self.config.archive.slot
        conninfo = admin_conninfo(self.config.node(name), self.config.auth, connect_timeout=2)
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                cursor = await conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND NOT active",
                    (slot,),
                )
                if cursor.rowcount:
                    self.emit("archive_slot_dropped", node=name, slot=slot)
        except (psycopg.Error, OSError):
            self._slot_checked.discard(name)  # try again next round

    def _set_aside_partials(self) -> None:
        """Move partial segments out of pg_receivewal's way, so it starts from the slot."""
        for path in incoming_dir(self.directory).glob("*.partial"):
            path.replace(self.directory / path.name)

    def store_finished(self) -> int:
        """Compress what pg_receivewal has finished into the archive (run in a thread)."""
        directory = self.directory
        incoming = incoming_dir(directory)
        if not incoming.is_dir():
            return 0
        for history in incoming.glob("*.history"):
            if not (directory / history.name).exists():
                shutil.copy2(history, directory / f".{history.name}.tmp")
                (directory / f".{history.name}.tmp").replace(directory / history.name)
        stored = 0
        compression = self.config.archive.compression
        for path in finished_in_incoming(directory):
            compress_file(path, directory / stored_name(path.name, compression), compression)
            path.unlink()
            stored += 1
        if stored:
            self.emit("archive_stored", level="debug", segments=stored)
        self.refresh_totals()
        self._shipping.ship(self.config, directory)
        return stored

    def refresh_totals(self) -> None:
        files = archived(self.directory)
        segments = [p for name, p in files.items() if parse_name(name)]
        self.state.segments = len(segments)
        self.state.stored_bytes = sum(_size(p) for p in files.values())


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
