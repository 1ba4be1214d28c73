"""Subcommands for backups: take one, list, verify, restore."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pghad.backup import restore as restore_mod
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupStatus
from pghad.backup.planner import Requested
from pghad.backup.runner import BackupRunner
from pghad.cli import common
from pghad.client import ApiUnreachable
from pghad.config import Config
from pghad.loop import local_now
from pghad.pgbin import find_bin_dir


def _parts(args: argparse.Namespace) -> tuple[Config, Catalog, Path]:
    config = common.config(args)
    return config, Catalog.of(config), find_bin_dir(config.pg_bin)


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
    from pghad.runtime import make_nodes

    config, catalog, bin_dir = _parts(args)
    nodes = make_nodes(config)
    runner = BackupRunner(config, catalog, bin_dir, nodes, progress=sys.stderr.isatty())
    print(f"taking a backup ({args.kind}) into {config.backup.dir} ...", file=sys.stderr)
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
    _config, catalog, bin_dir = _parts(args)
    record = restore_mod.find(catalog, args.id)
    asyncio.run(restore_mod.verify(bin_dir, record))
    print(f"{record.id}: backup successfully verified")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    _config, catalog, bin_dir = _parts(args)
    restored = asyncio.run(
        restore_mod.restore(catalog, bin_dir, args.id, args.target.resolve(), port=args.port)
    )
    print(
        f"restored {restored.record.id} (chain {' + '.join(restored.chain)}) into "
        f"{restored.target}; verified"
    )
    if restored.port is not None:
        stop = f"runuser -u {restored.owner} -- {bin_dir / 'pg_ctl'} stop -D {restored.target}"
        print(f"started on 127.0.0.1:{restored.port}; stop it with: {stop}")
    return 0
