"""Subcommands for backups: take one, list, verify, restore."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from pghad.api.client import ApiUnreachable
from pghad.backup import restore as restore_mod
from pghad.backup.archive.pitr import PointRestored, PointTarget, restore_to_point
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.planner import Requested
from pghad.backup.repository import fetch
from pghad.backup.repository.store import RepositoryError
from pghad.backup.repository.streaming import streamed
from pghad.backup.runner import BackupRunner
from pghad.cli import common
from pghad.config.model import Config
from pghad.daemon.memory_file import load_history
from pghad.decide.observation import parse_lsn
from pghad.errors import OperationRefused
from pghad.system import trust
from pghad.system.clock import local_now
from pghad.system.pgbin import find_bin_dir


def _parts(args: argparse.Namespace) -> tuple[Config, Catalog, Path]:
    """The config, the catalog (with what the bucket lists and this host lacks), the binaries."""
    config = common.config(args)
    trust.require_own_dirs(
        config.state.dir, config.backup.dir, config.archive.path(config.backup.dir)
    )
    catalog = Catalog.of(config)
    try:
        added = fetch.pull(config, catalog)
    except RepositoryError as exc:
        if not catalog.records():
            raise
        # The bucket is down: what this host has still lists, verifies and restores.
        print(f"pghad: warning: {exc}; listing this host's catalog only", file=sys.stderr)
        added = []
    for record in added:
        print(f"{record.id}: listed from the repository", file=sys.stderr)
    return config, catalog, find_bin_dir(config.pg_bin)


def cmd_backup(args: argparse.Namespace) -> int:
    """The running daemon takes the backup (one owner: events, metrics, one at a time); with no
    daemon, this process takes it itself."""
    try:
        answer = common.client(args).call("POST", f"/backups?kind={args.kind}")
    except ApiUnreachable as exc:
        print(f"{exc}; taking the backup here instead", file=sys.stderr)
        return _backup_here(args)
    print(_summary(answer["backup"], "; taken by the daemon"))
    return 0


def _summary(record: dict[str, Any], note: str = "") -> str:
    size_mb = (record.get("size_bytes") or 0) / 1e6
    return (
        f"{record['id']}: {record['kind']}, {size_mb:.1f} MB, {record['duration_s']} s, "
        f"from {record['source_node']} ({record['reason']}{note})"
    )


def _backup_here(args: argparse.Namespace) -> int:
    from pghad.daemon.runtime import make_nodes

    config, catalog, bin_dir = _parts(args)
    nodes = make_nodes(config)
    runner = BackupRunner(
        config,
        catalog,
        bin_dir,
        nodes,
        promotions=partial(load_history, config.state.dir),
        progress=sys.stderr.isatty(),
    )
    where = f"{config.backup.dir}" + (
        f" and s3://{config.repository.bucket}/{config.repository.prefix}"
        if config.repository.is_s3
        else ""
    )
    print(f"taking a backup ({args.kind}) into {where} ...", file=sys.stderr)
    record = asyncio.run(runner.run(local_now(), Requested(args.kind)))
    if record.status is not BackupStatus.OK:
        print(f"pghad: error: backup {record.id} failed: {record.error}", file=sys.stderr)
        return 1
    deleted = runner.apply_retention()
    print(_summary(record.to_dict()))
    for old in deleted:
        print(f"retention: removed {old.id}")
    return 0


def cmd_backups(args: argparse.Namespace) -> int:
    config, catalog, _bin = _parts(args)
    records = catalog.records()
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    if not records:
        print(f"no backups in {config.backup.dir} (config {common.config_path(args)})")
        return 0
    print(f"{'ID':<28} {'KIND':<12} {'STATUS':<8} {'SIZE_MB':>9} {'SECONDS':>8}  CHAIN / ERROR")
    for r in records:
        size = f"{(r.size_bytes or 0) / 1e6:.1f}" if r.size_bytes else "-"
        tail = r.error or " <- ".join(reversed(r.chain))
        print(
            f"{r.id:<28} {r.kind.value:<12} {r.status.value:<8} {size:>9} "
            f"{r.duration_s or 0:>8}  {tail}"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    config, catalog, bin_dir = _parts(args)
    record = restore_mod.find(catalog, args.id)
    asyncio.run(_verify(config, bin_dir, record))
    where = f" (read from {record.extra['repository']})" if config.repository.is_s3 else ""
    print(f"{record.id}: backup successfully verified{where}")
    return 0


async def _verify(config: Config, bin_dir: Path, record: BackupRecord) -> None:
    async with fetch.verifiable(config, record) as readable:
        await restore_mod.verify(bin_dir, readable)


def cmd_restore(args: argparse.Namespace) -> int:
    config, catalog, bin_dir = _parts(args)
    point = _point(args)
    if point is not None:
        return _restore_to_point(config, catalog, bin_dir, args, point)
    if args.id is None:
        raise OperationRefused("name a backup id, or a point: --to TIME, --to-lsn LSN, --latest")
    restored = asyncio.run(_restore(config, catalog, bin_dir, args))
    print(
        f"restored {restored.record.id} (chain {' + '.join(restored.chain)}) into "
        f"{restored.target}; verified"
    )
    if restored.port is not None:
        print(_started(bin_dir, restored.target, restored.port, restored.owner))
    return 0


async def _restore(
    config: Config, catalog: Catalog, bin_dir: Path, args: argparse.Namespace
) -> restore_mod.Restored:
    async with streamed(config, catalog, args.id):
        return await restore_mod.restore(
            catalog, bin_dir, args.id, args.target.absolute(), port=args.port
        )


def _started(bin_dir: Path, target: Path, port: int, owner: str | None) -> str:
    stop = f"{bin_dir / 'pg_ctl'} stop -D {target}"
    if owner is not None:
        stop = f"runuser -u {owner} -- {stop}"
    return f"started on 127.0.0.1:{port}; stop it with: {stop}"


def _point(args: argparse.Namespace) -> PointTarget | None:
    if args.id is not None and (args.to or args.to_lsn or args.latest):
        raise OperationRefused("give a backup id or a point (--to, --to-lsn, --latest), not both")
    if args.to:
        try:
            when = datetime.fromisoformat(args.to)
        except ValueError as exc:
            raise OperationRefused(
                f"--to {args.to!r} is not a time: write it as '2026-11-26 14:05:00' "
                "(optionally with a zone, +01:00)"
            ) from exc
        return PointTarget(time=when if when.tzinfo else when.astimezone())
    if args.to_lsn:
        try:
            lsn = parse_lsn(args.to_lsn)
        except ValueError:
            lsn = None
        if lsn is None:
            raise OperationRefused(f"--to-lsn {args.to_lsn!r} is not an LSN (like 0/3000060)")
        return PointTarget(lsn=lsn)
    return PointTarget() if args.latest else None


def _restore_to_point(
    config: Config, catalog: Catalog, bin_dir: Path, args: argparse.Namespace, point: PointTarget
) -> int:
    archive = config.archive.path(config.backup.dir)

    async def fetch_then_restore() -> PointRestored:
        backup_id = await fetch.fetch_wal_for_point(config, catalog, point)
        target = args.target.absolute()
        async with streamed(config, catalog, backup_id or ""):
            return await restore_to_point(catalog, bin_dir, archive, target, point, port=args.port)

    done = asyncio.run(fetch_then_restore())
    print(
        f"restored {done.backup.id} (chain {' + '.join(done.backup.chain)}) into {done.target}, "
        f"recovered from the archive to {point.describe()} and promoted: "
        f"{done.wal_bytes / 1e6:.1f} MB of WAL replayed in {done.replay_s} s "
        f"({done.replay_mb_s:.0f} MB/s); last commit {done.last_commit or 'not reported'}"
    )
    if done.port is not None:
        print(_started(bin_dir, done.target, done.port, done.owner))
    return 0
