"""Take one backup: pick the source, plan full or incremental, run pg_basebackup, verify, record.

The record is saved as running before any work starts; a failure records which step failed.
"""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from pghad.cluster import sqlops
from pghad.cluster.observation import ClusterView, NodeObservation, format_lsn, parse_lsn
from pghad.cluster.observe import observe
from pghad.commands import child_env, run_command
from pghad.config import Config, NodeConfig
from pghad.conninfo import admin_conninfo, replication_conninfo
from pghad.errors import OperationRefused, PghadError
from pghad.files import create_private

from .catalog import Catalog
from .model import BackupKind, BackupRecord, BackupStatus, backup_id
from .planner import Plan, Requested, choose, to_delete

if TYPE_CHECKING:
    from pghad.nodes.node import Node

BASEBACKUP_TIMEOUT_S = 6 * 3600
SUMMARY_ERRORS = ("WAL summar", "manifest requires WAL")


class StepFailed(PghadError):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step}: {message}")
        self.step = step


@contextmanager
def backup_lock(backup_dir: Path) -> Iterator[None]:
    make_private_dir(backup_dir)
    with (backup_dir / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OperationRefused(
                "a backup is already running (another pghad holds the backup lock); retry "
                "when it has finished"
            ) from exc
        yield


def make_private_dir(directory: Path) -> None:
    """The backups directory holds every row and password hash: only root may read it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)


def unwritable(directory: Path) -> str | None:
    """Why files cannot be created in `directory` (made if missing), or None."""
    try:
        make_private_dir(directory)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pick_source(view: ClusterView, prefer: str) -> NodeObservation | None:
    """The standby when it is healthy and preferred, else the primary (or any reachable node)."""
    standbys = [o for o in view.nodes.values() if o.is_standby and o.receiver_status == "streaming"]
    primaries = [o for o in view.nodes.values() if o.writable]
    ordered = standbys + primaries if prefer == "standby" else primaries + standbys
    return ordered[0] if ordered else None


def summaries_gap(rows: list[tuple[int, str, str]], timeline: int, start: int) -> str | None:
    """Why WAL summaries on `timeline` cannot serve an incremental from `start`, or None.

    Summaries not written yet (the summarizer is behind) are not a gap: pg_basebackup waits.
    """
    spans = sorted((parse_lsn(s) or 0, parse_lsn(e) or 0) for tli, s, e in rows if tli == timeline)
    if not spans:
        return None
    if spans[0][0] > start:
        return f"summaries begin at {format_lsn(spans[0][0])}, after {format_lsn(start)}"
    reached = start
    for span_start, span_end in spans:
        if span_end <= start:
            continue
        if span_start > reached:
            return f"no summary between {format_lsn(reached)} and {format_lsn(span_start)}"
        reached = max(reached, span_end)
    return None


def dump_path(backup_dir: Path, day: date, taken: set[str]) -> Path:
    """backup_completo_YYYYMMDD.sql.gz for the day's first dump, then _2, _3: one per backup."""
    number = 1
    while True:
        suffix = "" if number == 1 else f"_{number}"
        path = backup_dir / f"backup_completo_{day:%Y%m%d}{suffix}.sql.gz"
        if str(path) not in taken and not path.exists():
            return path
        number += 1


@dataclass
class BackupRunner:
    config: Config
    catalog: Catalog
    bin_dir: Path
    nodes: Mapping[str, Node]
    progress: bool = False  # show pg_basebackup's progress on our stderr (a terminal)
    _step: str = field(default="prepare", init=False)

    async def _observe(self) -> ClusterView:
        return await observe(self.nodes, self.config.cluster.probe_timeout)

    async def _records(self) -> list[BackupRecord]:
        return await asyncio.to_thread(self.catalog.records)

    async def _save(self, record: BackupRecord) -> None:
        await asyncio.to_thread(self.catalog.save, record)

    async def run(self, now: datetime, requested: Requested = Requested.AUTO) -> BackupRecord:
        """Take a backup now; returns its record (status ok or failed)."""
        problem = unwritable(self.config.backup.dir)
        if problem is not None:
            return await self._record_unwritable(now, requested, problem)
        with backup_lock(self.config.backup.dir):
            return await self._run_locked(now, requested)

    def _new_record(
        self, plan: Plan, now: datetime, records: list[BackupRecord], **fields: Any
    ) -> BackupRecord:
        ident = backup_id(plan.kind, now.date(), {r.id for r in records})
        return BackupRecord(
            id=ident,
            kind=plan.kind,
            day=now.date(),
            started_at=now.isoformat(),
            path=str(self.config.backup.dir / ident),
            parent=plan.parent.id if plan.parent else None,
            chain=(*(plan.parent.chain if plan.parent else ()), ident),
            reason=plan.reason,
            compression=self.config.backup.compression,
            **fields,
        )

    async def _record_unwritable(
        self, now: datetime, requested: Requested, problem: str
    ) -> BackupRecord:
        records = await self._records()
        plan = choose(records, requested, self.config.backup.cycle_days, None)
        directory = self.config.backup.dir
        record = self._new_record(
            plan,
            now,
            records,
            status=BackupStatus.FAILED,
            finished_at=now.isoformat(),
            duration_s=0.0,
            error=f"step prepare: backup directory {directory} is not writable: {problem}",
        )
        await self._save(record)
        return record

    async def _run_locked(
        self, now: datetime, requested: Requested, why_full: str | None = None
    ) -> BackupRecord:
        records = await self._records()
        view = await self._observe()
        source = pick_source(view, self.config.backup.source)
        timeline = source.timeline if source else None
        plan = choose(records, requested, self.config.backup.cycle_days, timeline)
        if why_full is not None:
            plan = Plan(BackupKind.FULL, None, why_full)
        if source is not None and plan.kind is BackupKind.INCREMENTAL:
            plan = await self._check_summaries(plan, source, timeline)
        record = self._new_record(
            plan,
            now,
            records,
            status=BackupStatus.RUNNING,
            timeline=timeline,
            source_node=source.name if source else None,
        )
        await self._save(record)
        started = time.monotonic()
        try:
            if source is None:
                raise StepFailed("select-source", "no reachable server to back up from")
            record = await self._take(record, plan, self.config.node(source.name), view, records)
        except (PghadError, OSError) as exc:
            # A full disk, a dead source, a failed verify: nothing partial stays behind.
            await asyncio.to_thread(remove_partial, record)
            error = str(exc) if isinstance(exc, StepFailed) else f"step {self._step}: {exc}"
            record = record.with_(status=BackupStatus.FAILED, error=error)
        elapsed = time.monotonic() - started
        record = record.with_(
            finished_at=(now + timedelta(seconds=elapsed)).isoformat(),
            duration_s=round(elapsed, 3),
        )
        await self._save(record)
        if record.kind is BackupKind.INCREMENTAL and any(
            marker in (record.error or "") for marker in SUMMARY_ERRORS
        ):
            # The server could not serve this incremental (WAL summaries): take a full one.
            return await self._run_locked(
                now, Requested.FULL, f"{record.id} failed for want of WAL summaries"
            )
        return record

    async def _check_summaries(
        self, plan: Plan, source: NodeObservation, timeline: int | None
    ) -> Plan:
        assert plan.parent is not None and plan.parent.start_lsn is not None
        node = self.config.node(source.name)
        try:
            async with await sqlops.connect(node, self.config.auth) as conn:
                setting = await (await conn.execute("SHOW summarize_wal")).fetchone()
                rows = await (
                    await conn.execute(
                        "SELECT tli, start_lsn::text, end_lsn::text "
                        "FROM pg_available_wal_summaries()"
                    )
                ).fetchall()
        except psycopg.Error:
            return plan  # pg_basebackup will say what is wrong
        start = parse_lsn(plan.parent.start_lsn) or 0
        gap = "summarize_wal is off" if setting and setting[0] == "off" else None
        gap = gap or summaries_gap(list(rows), timeline or 0, start)
        if gap is not None:
            return Plan(
                BackupKind.FULL,
                None,
                f"WAL summaries on {source.name} cannot serve an incremental on "
                f"{plan.parent.id} ({gap}): a full backup instead",
            )
        return plan

    async def _take(
        self,
        record: BackupRecord,
        plan: Plan,
        source: NodeConfig,
        view: ClusterView,
        records: list[BackupRecord],
    ) -> BackupRecord:
        self._step = "prepare"
        path = Path(record.path)
        problem = unwritable(path.parent)
        if problem is not None:
            raise StepFailed(
                "prepare", f"backup directory {path.parent} is not writable: {problem}"
            )
        if plan.parent is not None and view[source.name].is_standby:
            await self._advance_standby_restartpoint(view)
        args = ["-D", str(path), "-c", "fast", "-X", "stream", "--no-password"]
        if plan.parent is not None:
            args.append(f"--incremental={Path(plan.parent.path) / 'backup_manifest'}")
        if self.progress:
            args.append("--progress")
        if record.is_tar:
            args += ["-Ft", "-Z", record.compression]
        conninfo = replication_conninfo(
            source, self.config.auth, "pghad_backup", with_password=False
        )
        started = time.monotonic()
        self._step = "pg_basebackup"
        await self._program("pg_basebackup", [*args, "-d", conninfo], step="pg_basebackup")
        copied = time.monotonic()
        self._step = "verify"
        await self._program("pg_verifybackup", verify_args(record), step="verify")
        steps = {
            "basebackup_s": round(copied - started, 3),
            "verify_s": round(time.monotonic() - copied, 3),
        }
        start_lsn, stop_lsn, timeline = manifest_wal_range(path)
        record = record.with_(
            status=BackupStatus.OK,
            verified=True,
            start_lsn=start_lsn,
            stop_lsn=stop_lsn,
            timeline=timeline,
            size_bytes=await asyncio.to_thread(directory_size, path),
            extra={**record.extra, **steps},
        )
        if plan.kind is BackupKind.FULL and self.config.backup.logical_dump:
            self._step = "logical-dump"
            taken = {r.logical_dump for r in records if r.logical_dump}
            dump = await asyncio.to_thread(dump_path, self.config.backup.dir, record.day, taken)
            record = record.with_(logical_dump=str(dump))
            await self._logical_dump(source, dump)
            record = record.with_(logical_dump=str(dump), logical_dump_bytes=dump.stat().st_size)
        return record

    async def _advance_standby_restartpoint(self, view: ClusterView) -> None:
        """A standby's backup starts at its last restartpoint; an incremental needs a newer one.

        A checkpoint on the primary and a WAL switch give the standby a restartpoint and its
        WAL summarizer a complete segment to summarize.
        """
        primary = next((o.name for o in view.nodes.values() if o.writable), None)
        if primary is None:
            return
        node = self.config.node(primary)
        try:
            async with await sqlops.connect(node, self.config.auth) as conn:
                await conn.execute("CHECKPOINT")
                await conn.execute("SELECT pg_switch_wal()")
        except psycopg.Error:
            return

    async def _program(self, program: str, args: list[str], step: str) -> str:
        env = {"PGPASSWORD": self.config.auth.replication_password}
        result = await run_command(
            [str(self.bin_dir / program), *args],
            BASEBACKUP_TIMEOUT_S,
            env=env,
            echo_stderr=self.progress and program == "pg_basebackup",
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            detail = " / ".join(line for line in lines if "WARNING" not in line)[-800:]
            raise StepFailed(step, f"{program} failed: {detail}")
        return result.stdout

    async def _logical_dump(self, source: NodeConfig, target: Path) -> None:
        """pg_dumpall streamed through gzip: `gunzip -c FILE | psql` restores it."""
        conninfo = admin_conninfo(source, self.config.auth, with_password=False)
        process = await asyncio.create_subprocess_exec(
            str(self.bin_dir / "pg_dumpall"),
            "-d",
            conninfo,
            "--no-password",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env({"PGPASSWORD": self.config.auth.password}),
        )
        assert process.stdout is not None and process.stderr is not None
        tmp = partial_dump(target)
        errors = asyncio.ensure_future(process.stderr.read())
        try:
            with create_private(tmp) as raw, gzip.GzipFile(fileobj=raw, mode="wb") as handle:
                while chunk := await process.stdout.read(1 << 20):
                    await asyncio.to_thread(handle.write, chunk)
        except BaseException:
            process.kill()
            await process.wait()
            errors.cancel()
            raise
        message = (await errors).decode(errors="replace")
        if await process.wait() != 0:
            raise StepFailed("logical-dump", f"pg_dumpall failed: {message.strip()[-500:]}")
        tmp.replace(target)

    def apply_retention(self) -> list[BackupRecord]:
        deleted = to_delete(self.catalog.records(), self.config.backup.keep_cycles)
        for record in deleted:
            shutil.rmtree(record.path, ignore_errors=True)
            if record.logical_dump:
                Path(record.logical_dump).unlink(missing_ok=True)
            self.catalog.delete(record)
        return deleted


def partial_dump(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def remove_partial(record: BackupRecord) -> None:
    """Everything a failed backup wrote: its directory, its dump and the dump's temp file."""
    shutil.rmtree(record.path, ignore_errors=True)
    if record.logical_dump:
        dump = Path(record.logical_dump)
        dump.unlink(missing_ok=True)
        partial_dump(dump).unlink(missing_ok=True)


def verify_args(record: BackupRecord) -> list[str]:
    # pg_waldump cannot read WAL inside tar files; the manifest still checks every file.
    return ["--quiet", *(["--no-parse-wal"] if record.is_tar else []), record.path]


def manifest_wal_range(path: Path) -> tuple[str, str, int]:
    manifest = json.loads((path / "backup_manifest").read_text())
    ranges = manifest["WAL-Ranges"]
    return ranges[0]["Start-LSN"], ranges[-1]["End-LSN"], int(ranges[-1]["Timeline"])
