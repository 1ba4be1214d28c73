"""Backup benchmark: pghad's full, incremental and restore beside plain PostgreSQL tools.

On a lab database of about 1.1 GB (pgbench scale 70), in one run on the same data:
- full: `pghad` full backup vs plain `pg_basebackup -c fast -X stream` (time, bytes on disk),
  medians of 3 alternating runs;
- incremental after changing 1% of the rows (a contiguous range, then spread evenly);
- restore: `pghad restore` (verify the chain, combine, verify the result) vs plain
  `pg_combinebackup`, medians of 3 alternating runs;
- a gzip-compressed full backup (`compression = "gzip"`): time and bytes;
- an incremental from the standby on a quiet cluster (the summarizer's wait);
- point-in-time recovery: WAL written by pgbench for --pitr-seconds, archived by pghad's archiver,
  replayed by `restore --latest` (MB of WAL per second of recovery).
pghad's backups use --compression (default zstd). Usage, from the repository root:

    .venv/bin/python bench/backup.py [--scale 70] [--source standby|primary] [--compression zstd]
    .venv/bin/python bench/backup.py --repository s3      # local zstd vs the bucket, pgBackRest
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backup_s3 import s3_phase
from common import save_result

from pghad.backup.archive.archiver import Archiver
from pghad.backup.archive.pitr import PointTarget, restore_to_point
from pghad.backup.catalog import Catalog
from pghad.backup.planner import Requested
from pghad.backup.restore import restore
from pghad.backup.runner import BackupRunner
from pghad.backup.steps import directory_size
from pghad.config.model import Config, load_config
from pghad.daemon.runtime import make_nodes
from pghad.lab.local import lab_destroy
from pghad.observe.observer import observe
from pghad.system import pgbin
from tests.support.chaos import connect, scratch_lab, set_config_value, wait_for

REPEATS = 3


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.monotonic() - started


def caught_up(config: Config) -> bool:
    with connect(config, "node1") as conn:
        row = conn.execute(
            "SELECT pg_current_wal_lsn() = replay_lsn FROM pg_stat_replication"
        ).fetchone()
    return bool(row and row[0])


def plain_basebackup(config: Config, bin_dir: Path, node: str, target: Path, *extra: str) -> float:
    n = config.node(node)
    conninfo = f"host={n.host} port={n.port} user={config.auth.replication_user}"
    return timed(
        [
            str(bin_dir / "pg_basebackup"),
            "-d",
            conninfo,
            "-D",
            str(target),
            "-c",
            "fast",
            "-X",
            "stream",
            *extra,
        ],
        {"PGPASSWORD": config.auth.replication_password},
    )


async def pitr_phase(
    config: Config, runner: BackupRunner, root: Path, seconds: int
) -> dict[str, object]:
    """A full backup, pgbench for `seconds` with the archiver running, then restore --latest."""
    archiver = Archiver(lambda: config, runner.bin_dir, lambda *_a, **_k: None)
    stop = asyncio.Event()

    async def follow() -> None:
        while not stop.is_set():
            view = await observe(runner.nodes, 1.0)
            archiver.follow(view, "node1", time.monotonic())
            await asyncio.sleep(0.5)

    following = asyncio.create_task(follow())
    base = await runner.run(datetime(2026, 4, 1, 2, 0, tzinfo=UTC), Requested.FULL)
    assert base.status.value == "ok", base.error
    n1 = config.node("node1")
    pgbench = await asyncio.create_subprocess_exec(
        str(runner.bin_dir / "pgbench"),
        *("-T", str(seconds), "-c", "2", "-h", n1.host, "-p", str(n1.port), "-U", n1.user),
        n1.dbname,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PGPASSWORD": config.auth.password},
    )
    await pgbench.wait()
    deadline = time.monotonic() + 120
    while archiver.state.lag_bytes != 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.to_thread(archiver.store_finished)
    stop.set()
    await following
    await archiver.stop()
    archive = config.archive.path(config.backup.dir)
    started = time.monotonic()
    done = await restore_to_point(
        runner.catalog, runner.bin_dir, archive, root / "pitr", PointTarget()
    )
    return {
        "pitr_wal_bytes": done.wal_bytes,
        "pitr_archive_stored_bytes": archiver.state.stored_bytes,
        "pitr_replay_s": done.replay_s,
        "pitr_replay_mb_s": round(done.replay_mb_s, 1),
        "pitr_total_s": round(time.monotonic() - started, 3),
    }


def main() -> int:  # noqa: PLR0915 - one linear measurement script reads best top to bottom
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--source", choices=["standby", "primary"], default="standby")
    parser.add_argument("--compression", choices=["zstd", "none", "gzip"], default="zstd")
    parser.add_argument("--pitr-seconds", type=int, default=20)
    parser.add_argument(
        "--repository",
        choices=["local", "s3"],
        default="local",
        help="s3: local zstd vs an S3 bucket (SeaweedFS), and pgBackRest beside them",
    )
    args = parser.parse_args()

    root, config_path = scratch_lab(first_port=29432, api_port=28091)
    lab_dir = config_path.parent
    set_config_value(config_path, "backup", "logical_dump", "false")
    set_config_value(config_path, "backup", "source", f'"{args.source}"')
    set_config_value(config_path, "backup", "compression", f'"{args.compression}"')
    config = load_config(config_path)
    bin_dir = pgbin.find_bin_dir(config.pg_bin)
    runner = BackupRunner(config, Catalog(config.backup.dir, None), bin_dir, make_nodes(config))
    node = "node2" if args.source == "standby" else "node1"
    n1 = config.node("node1")
    result: dict[str, object] = {
        "scale": args.scale,
        "source": args.source,
        "compression": args.compression,
        "zstd_level": config.backup.zstd_level,
    }
    try:
        started = time.monotonic()
        subprocess.run(
            [
                str(bin_dir / "pgbench"),
                "-i",
                "-s",
                str(args.scale),
                "-q",
                "-h",
                n1.host,
                "-p",
                str(n1.port),
                "-U",
                n1.user,
                n1.dbname,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PGPASSWORD": config.auth.password},
        )
        result["pgbench_init_s"] = round(time.monotonic() - started, 1)
        with connect(config, "node1") as conn:
            conn.execute("CHECKPOINT")
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        result["database_bytes"] = size[0] if size else None
        wait_for(lambda: caught_up(config), timeout=300, what="the standby to catch up")
        if args.repository == "s3":
            result.update(s3_phase(config, bin_dir, root, args.scale))
            save_result(f"backup-s3-{args.source}", result)
            print(json.dumps(result, indent=2))
            return 0

        # Alternate plain and pghad runs so neither always gets the warmer page cache.
        plain_times, pghad_times, fulls = [], [], []
        now = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
        for attempt in range(REPEATS):
            plain_dir = root / f"plain-full-{attempt}"
            os.sync()  # start every timed run with no dirty pages left by the one before
            plain_times.append(plain_basebackup(config, bin_dir, node, plain_dir))
            result["plain_full_bytes"] = directory_size(plain_dir)
            if attempt < REPEATS - 1:
                shutil.rmtree(plain_dir)  # the last one is the base of a plain chain below
            os.sync()
            full = asyncio.run(runner.run(now + timedelta(minutes=attempt), Requested.FULL))
            assert full.status.value == "ok", full.error
            fulls.append(full)
            pghad_times.append(full.duration_s or 0.0)
        result["plain_full_s"] = round(statistics.median(plain_times), 3)
        result["pghad_full_s"] = round(statistics.median(pghad_times), 3)
        result["pghad_full_steps"] = full.extra
        steps = [r.extra.get("basebackup_s", 0.0) for r in fulls]
        result["pghad_full_copy_s"] = round(statistics.median(steps), 3)
        result["per_run_full_s"] = {"plain": plain_times, "pghad": pghad_times}
        result["pghad_full_bytes"] = full.size_bytes

        changes = {
            "contiguous_1pct": "UPDATE pgbench_accounts SET abalance = abalance + 1 "
            f"WHERE aid <= {args.scale * 1000}",
            "spread_1pct": "UPDATE pgbench_accounts SET abalance = abalance + 1 "
            "WHERE aid % 100 = 0",
        }
        last = full
        for day, (label, statement) in enumerate(changes.items(), start=1):
            with connect(config, "node1") as conn:
                conn.execute(statement)
            wait_for(lambda: caught_up(config), timeout=300, what="the standby to catch up")
            os.sync()
            incremental = asyncio.run(runner.run(now + timedelta(days=day)))
            assert incremental.status.value == "ok", incremental.error
            result[f"incremental_{label}_s"] = incremental.duration_s
            result[f"incremental_{label}_bytes"] = incremental.size_bytes
            result[f"incremental_{label}_pct_of_full"] = round(
                100 * (incremental.size_bytes or 0) / (full.size_bytes or 1), 1
            )
            if last is full:
                first_incremental = incremental
                plain_incremental = root / "plain-incremental"
                manifest = f"--incremental={plain_dir / 'backup_manifest'}"
                plain_basebackup(config, bin_dir, node, plain_incremental, manifest)
            last = incremental

        chain = [plain_dir, plain_incremental]  # the same data as pghad's chain, plain files
        combines, restores = [], []
        for attempt in range(REPEATS):
            plain_out = root / f"plain-combined-{attempt}"
            combine = [str(bin_dir / "pg_combinebackup"), *map(str, chain), "-o", str(plain_out)]
            os.sync()
            combines.append(timed(combine))
            shutil.rmtree(plain_out)
            os.sync()
            target = root / f"restored-{attempt}"
            started = time.monotonic()
            asyncio.run(restore(runner.catalog, bin_dir, first_incremental.id, target))
            restores.append(time.monotonic() - started)
            shutil.rmtree(target)
        result["per_run_restore_s"] = {"plain_combine": combines, "pghad": restores}
        gzip_backup = config.backup.model_copy(update={"compression": "gzip"})
        gzip_runner = BackupRunner(
            config.model_copy(update={"backup": gzip_backup}), runner.catalog, bin_dir, runner.nodes
        )
        os.sync()
        gzipped = asyncio.run(gzip_runner.run(now + timedelta(days=9), Requested.FULL))
        assert gzipped.status.value == "ok", gzipped.error
        result["pghad_full_gzip_s"] = gzipped.duration_s
        result["pghad_full_gzip_bytes"] = gzipped.size_bytes
        if args.compression == "zstd":  # the other common level, for comparison
            other = 3 if config.backup.zstd_level != 3 else 1
            leveled = config.backup.model_copy(update={"zstd_level": other})
            level_runner = BackupRunner(
                config.model_copy(update={"backup": leveled}), runner.catalog, bin_dir, runner.nodes
            )
            os.sync()
            at_level = asyncio.run(
                level_runner.run(now + timedelta(days=9, hours=1), Requested.FULL)
            )
            assert at_level.status.value == "ok", at_level.error
            result[f"pghad_full_zstd_level_{other}_s"] = at_level.duration_s
            result[f"pghad_full_zstd_level_{other}_bytes"] = at_level.size_bytes
        result["plain_combine_s"] = round(statistics.median(combines), 3)
        result["pghad_restore_s"] = round(statistics.median(restores), 3)
        wait_for(lambda: caught_up(config), timeout=300, what="the standby to catch up")
        time.sleep(10)  # a quiet cluster: nothing written for a while
        quiet = asyncio.run(runner.run(now + timedelta(days=10), Requested.INCREMENTAL))
        assert quiet.status.value == "ok", quiet.error
        result["incremental_quiet_standby_s"] = quiet.duration_s
        result.update(asyncio.run(pitr_phase(config, runner, root, args.pitr_seconds)))
    finally:
        lab_destroy(lab_dir)
        shutil.rmtree(root, ignore_errors=True)
    full_s, plain_s = float(str(result["pghad_full_s"])), float(str(result["plain_full_s"]))
    result["full_vs_plain_time"] = round(full_s / plain_s, 2)
    restore_s = float(str(result["pghad_restore_s"]))
    result["restore_vs_plain_combine_time"] = round(
        restore_s / float(str(result["plain_combine_s"])), 2
    )
    save_result(f"backup-{args.source}", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
