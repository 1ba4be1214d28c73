"""Take one backup: pick the source, plan full or incremental, run pg_basebackup, verify, record.

The record is saved as running before any work starts; a failure records which step failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from pghad.backup.catalog import Catalog
from pghad.backup.dump import logical_dump
from pghad.backup.model import BackupKind, BackupRecord, BackupStatus, backup_id
from pghad.backup.planner import Plan, Requested, choose
from pghad.backup.repository.taking import Taking
from pghad.backup.restartpoint import advance_restartpoint
from pghad.backup.retention import apply_retention
from pghad.backup.steps import (
    StepFailed,
    backup_lock,
    directory_size,
    dump_path,
    manifest_wal_range,
    pick_source,
    promotion_since,
    remove_partial,
    summaries_gap,
    unwritable,
    verify_args,
)
from pghad.config.model import Config, NodeConfig
from pghad.decide.observation import ClusterView, NodeObservation, parse_lsn
from pghad.decide.promotions import Promotion
from pghad.errors import PghadError
from pghad.nodes import sql as sqlops
from pghad.nodes.conninfo import admin_conninfo, replication_conninfo
from pghad.observe.observer import observe
from pghad.system.commands import run_command

if TYPE_CHECKING:
    from pghad.nodes.node import Node

BASEBACKUP_TIMEOUT_S = 6 * 3600
SUMMARY_ERRORS = ("WAL summar", "manifest requires WAL")


@dataclass
class BackupRunner:
    config: Config
    catalog: Catalog
    bin_dir: Path
    nodes: Mapping[str, Node]
    # The daemon's promotion history (a new primary since the last backup starts a new cycle).
    promotions: Callable[[], Sequence[Promotion]] = tuple
    progress: bool = False  # show pg_basebackup's progress on our stderr (a terminal)
    _step: str = field(default="prepare", init=False)
    _dump: str | None = field(default=None, init=False)
    _repository: Taking = field(init=False)

    def __post_init__(self) -> None:
        self._repository = Taking(self.config)

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
        plan = choose(records, requested, self.config.backup.cycle_days, None, today=now.date())
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
        promotion = promotion_since(await asyncio.to_thread(self.promotions), records)
        cycle = self.config.backup.cycle_days
        plan = choose(records, requested, cycle, timeline, today=now.date(), promotion=promotion)
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
        except (PghadError, OSError, asyncio.CancelledError) as exc:
            # A full disk, a dead source, a failed verify, a stop: nothing partial stays behind.
            record = record.with_(logical_dump=self._dump)
            await asyncio.shield(asyncio.to_thread(remove_partial, record))
            await asyncio.shield(self._repository.remove(record.id))
            error = str(exc) if isinstance(exc, StepFailed) else f"step {self._step}: {exc}"
            if isinstance(exc, asyncio.CancelledError):
                error = f"step {self._step}: cancelled (the daemon stopped)"
            failed = record.with_(status=BackupStatus.FAILED, error=error, logical_dump=None)
            if isinstance(exc, asyncio.CancelledError):
                await asyncio.shield(self._save(failed))
                raise
            record = failed
        elapsed = time.monotonic() - started
        record = record.with_(
            finished_at=(now + timedelta(seconds=elapsed)).isoformat(),
            duration_s=round(elapsed, 3),
        )
        record = await self._repository.list(record)
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
        self._step, self._dump = "prepare", None
        self._repository = Taking(self.config)
        path = Path(record.path)
        problem = unwritable(path.parent)
        if problem is not None:
            raise StepFailed(
                "prepare", f"backup directory {path.parent} is not writable: {problem}"
            )
        if plan.parent is not None and view[source.name].is_standby:
            primary = next((o.name for o in view.nodes.values() if o.writable), None)
            if primary is not None:
                await advance_restartpoint(self.config.node(primary), source, self.config.auth)
        zstd = record.compression == "zstd"
        # zstd: the tar stream on stdout (WAL fetched at the end), compressed here as it comes.
        args = ["-D", "-" if zstd else str(path), "-c", "fast", "--no-password"]
        args += ["-Ft", "-X", "fetch"] if zstd else ["-X", "stream"]
        if plan.parent is not None:
            await self._repository.parent_manifest(plan.parent)
            args.append(f"--incremental={Path(plan.parent.path) / 'backup_manifest'}")
        if self.progress and not zstd:
            args.append("--progress")
        if record.is_tar and not zstd:
            args += ["-Ft", "-Z", record.compression]
        args += ["-d", replication_conninfo(source, self.config.auth, "pghad_backup", False)]
        started = time.monotonic()
        self._step = "pg_basebackup"
        if zstd:
            path.mkdir(mode=0o700)
            program = [str(self.bin_dir / "pg_basebackup"), *args]
            await self._repository.basebackup_zstd(program, path, record.id)
        else:
            await self._program("pg_basebackup", args, step="pg_basebackup")
        copied = time.monotonic()
        self._step = "verify"
        if not zstd:  # a zstd backup was checked as it arrived
            await self._program("pg_verifybackup", verify_args(record), step="verify")
        steps = {
            "basebackup_s": round(copied - started, 3),
            "verify_s": round(time.monotonic() - copied, 3),
        }
        start_lsn, stop_lsn, timeline = await asyncio.to_thread(manifest_wal_range, path)
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
            self._dump = str(dump)
            record = record.with_(logical_dump=str(dump))
            conninfo = admin_conninfo(source, self.config.auth, with_password=False)
            await logical_dump(self.bin_dir, conninfo, self.config.auth.password, dump)
            record = record.with_(logical_dump=str(dump), logical_dump_bytes=dump.stat().st_size)
        return await self._repository.upload(record)

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

    def apply_retention(self) -> list[BackupRecord]:
        return apply_retention(self.config, self.catalog)
