"""Point-in-time restore: the newest backup before the target, then WAL from the archive.

The chain is combined as for any restore; the WAL it needs is expanded from the archive into a
staging directory inside the target (readable by the server's own user), the newest partial
segment of the newest timeline is put in pg_wal (it holds the last archived commits), and the
server recovers with `recovery_target_timeline = 'latest'`, so it follows every promotion.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pghad.backup import restore as backup_restore
from pghad.backup.archive.wal_files import (
    archived,
    expand_file,
    finished_in_incoming,
    incoming_dir,
    parse_name,
    segment_of,
)
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.steps import StepFailed
from pghad.config.model import AuthConfig
from pghad.decide.observation import format_lsn, parse_lsn
from pghad.errors import OperationRefused
from pghad.nodes.base import Role
from pghad.nodes.local import LocalDriver
from pghad.system import files, runas
from pghad.system.commands import run_command

STAGING = "pghad_restore_wal"
RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_timeline",
    "recovery_target_action",
)
RECOVERY_TIMEOUT_S = 6 * 3600
LAST_COMMIT = re.compile(r"last completed transaction was at log time (.+)$", re.M)
REDO = re.compile(r"redo (starts|done) at ([0-9A-F]+/[0-9A-F]+)")


@dataclass(frozen=True)
class PointTarget:
    time: datetime | None = None
    lsn: int | None = None

    def describe(self) -> str:
        if self.time is not None:
            return f"time {self.time.isoformat()}"
        if self.lsn is not None:
            return f"LSN {format_lsn(self.lsn)}"
        return "its end"


@dataclass(frozen=True)
class PointRestored:
    backup: BackupRecord
    target: Path
    point: PointTarget
    wal_bytes: int  # replayed, from the server's "redo starts at" and "redo done at"
    replay_s: float
    last_commit: str | None
    port: int | None
    owner: str | None

    @property
    def replay_mb_s(self) -> float:
        return self.wal_bytes / 1e6 / self.replay_s if self.replay_s > 0 else 0.0


def choose_backup(records: list[BackupRecord], point: PointTarget) -> BackupRecord:
    """The newest good backup that ended before the target."""
    good = [r for r in records if r.status is BackupStatus.OK and r.stop_lsn and r.finished_at]
    if point.time is not None:
        when = point.time
        good = [r for r in good if datetime.fromisoformat(str(r.finished_at)) <= when]
    elif point.lsn is not None:
        good = [r for r in good if (parse_lsn(r.stop_lsn) or 0) <= point.lsn]
    if not good:
        raise OperationRefused(
            f"no good backup ended before {point.describe()}: restore needs a backup taken "
            "before the point (pghad backups lists them)"
        )
    return max(good, key=lambda r: r.started)


def stage_wal(archive_dir: Path, target: Path, start_lsn: int) -> int:
    """Expand what recovery from `start_lsn` may ask for; returns the bytes staged."""
    staging = target / STAGING
    staging.mkdir(mode=0o700)
    first = segment_of(start_lsn)
    staged = 0
    for name, path in _wal_sources(archive_dir).items():
        wal = parse_name(name)
        if wal is None or (not wal.partial and wal.segno >= first):
            expand_file(path, staging / name)
            staged += (staging / name).stat().st_size if wal is not None else 0
    partials = [p for p in incoming_dir(archive_dir).glob("*.partial") if parse_name(p.name)]
    if partials:
        newest = max(partials, key=lambda p: parse_name(p.name) or 0)
        wal = parse_name(newest.name)
        assert wal is not None
        if wal.segno >= first:
            # Still being written: the last archived commits are in it (zero-padded to full size).
            shutil.copyfile(newest, target / "pg_wal" / newest.name.removesuffix(".partial"))
            staged += newest.stat().st_size
    return staged


def _wal_sources(archive_dir: Path) -> dict[str, Path]:
    """Stored segment and history files by plain name, and those still in incoming/ (finished,
    the archiver stores them a moment later or stopped before it could): recovery needs them
    as much as stored ones."""
    found = archived(archive_dir)
    incoming = incoming_dir(archive_dir)
    if incoming.is_dir():
        for path in [*finished_in_incoming(archive_dir), *incoming.glob("*.history")]:
            found.setdefault(path.name, path)
    return found


def recovery_settings(target: Path, point: PointTarget) -> str:
    staging = target / STAGING
    lines = [
        f'restore_command = \'cp "{staging}/%f" "%p"\'',
        "recovery_target_timeline = 'latest'",
        "recovery_target_action = 'promote'",
    ]
    if point.time is not None:
        lines.append(f"recovery_target_time = '{point.time.isoformat(sep=' ')}'")
    elif point.lsn is not None:
        lines.append(f"recovery_target_lsn = '{format_lsn(point.lsn)}'")
    return "\n".join(lines) + "\n"


def _rewrite_auto_conf(target: Path, extra: str, owner: tuple[int, int] | None = None) -> None:
    """Never through a link: after recovery the tree is the server's user's."""
    auto = target / "postgresql.auto.conf"
    lines = (files.read_text(auto) or "").splitlines(keepends=True)
    kept = [ln for ln in lines if ln.split("=", 1)[0].strip() not in RECOVERY_SETTINGS]
    files.write_file(auto, ("".join(kept) + extra).encode(), owner)


def _log_text(log: Path) -> str:
    return files.read_text(log, errors="replace") or ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def cluster_state(bin_dir: Path, target: Path) -> str:
    """pg_control's "Database cluster state" (no connection, so no password needed)."""
    result = await run_command([str(bin_dir / "pg_controldata"), str(target)], 30)
    for line in result.stdout.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


async def _wait_promoted(driver: LocalDriver, bin_dir: Path, target: Path, log: Path) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        if await cluster_state(bin_dir, target) == "in production":
            return
        if not await driver.is_running():
            tail = " / ".join(_log_text(log).strip().splitlines()[-4:])
            raise StepFailed("recover", f"the server stopped in recovery: {tail}")
        await asyncio.sleep(0.2)
    raise StepFailed("recover", f"not promoted after {RECOVERY_TIMEOUT_S} s")


async def restore_to_point(
    catalog: Catalog,
    bin_dir: Path,
    archive_dir: Path,
    target: Path,
    point: PointTarget,
    *,
    port: int | None = None,
    owner: str | None = None,
) -> PointRestored:
    """Combine the chain, recover to `point` from the archive, promote; stop it unless `port`."""
    if not archive_dir.is_dir():
        raise OperationRefused(
            f"no WAL archive at {archive_dir}: set [archive] enabled = true (point-in-time "
            "restore needs the archive); `pghad restore ID` restores a backup as it was"
        )
    backup = choose_backup(await asyncio.to_thread(catalog.records), point)
    restored = await backup_restore.restore(catalog, bin_dir, backup.id, target)
    start = parse_lsn(backup.start_lsn) or 0
    await asyncio.to_thread(stage_wal, archive_dir, target, start)
    # Every edit of root's before the tree is handed to the server's user.
    _rewrite_auto_conf(target, recovery_settings(target, point))
    files.write_file(target / "recovery.signal", b"", None)
    user = owner or (runas.ensure_lab_user() if runas.is_root() else None)
    if user is not None:
        await asyncio.to_thread(backup_restore.chown_tree, target, user)
    node = backup_restore.restored_node(target, port or free_port())
    log = target / "restore-postgresql.log"
    driver = LocalDriver(node, AuthConfig(), bin_dir, os_user=user, log_path=log)
    started = time.monotonic()
    await driver.start(Role.PRIMARY)
    try:
        await _wait_promoted(driver, bin_dir, target, log)
    except BaseException:
        await driver.stop("immediate")
        raise
    replay_s = time.monotonic() - started
    # fd-based: links are not followed
    await asyncio.to_thread(shutil.rmtree, target / STAGING, ignore_errors=True)
    _rewrite_auto_conf(target, "", files.owner_ids(target))
    text = _log_text(log)
    found = LAST_COMMIT.findall(text)
    redo = {kind: parse_lsn(lsn) or 0 for kind, lsn in REDO.findall(text)}
    if port is None:
        await driver.stop("fast")
    return PointRestored(
        backup=restored.record,
        target=target,
        point=point,
        wal_bytes=max(0, redo.get("done", 0) - redo.get("starts", 0)),
        replay_s=round(replay_s, 3),
        last_commit=found[-1].strip() if found else None,
        port=port,
        owner=user,
    )
