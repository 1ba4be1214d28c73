"""`bench/backup.py --repository s3`: pghad's backups to an S3 bucket beside the local directory.

On one lab database (pgbench scale 70 by default) and a SeaweedFS `weed mini` on loopback:
- full backup: local zstd vs to the bucket (streamed, encrypted, no local copy), medians of 3
  alternating runs;
- an incremental after changing 1% of the rows (a contiguous range) in each;
- restore of full + incremental: from local disk vs from the bucket (streamed, decrypted and
  unpacked as it arrives, as on a new host), medians of 3 alternating runs;
- pgBackRest (Debian's package) beside them: asked first whether it supports this PostgreSQL
  (stanza-create; 2.45 refuses 18, and its answer is recorded), then measured on Debian's
  PostgreSQL 15 with the same data to the same bucket (pgbackrest_s3.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import common  # noqa: F401 - makes the repository's tests importable
import pgbackrest_s3

from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord
from pghad.backup.planner import Requested
from pghad.backup.repository.streaming import streamed
from pghad.backup.restore import restore
from pghad.backup.runner import BackupRunner
from pghad.config.model import Config
from pghad.config.sections import RepositoryConfig
from pghad.daemon.runtime import make_nodes
from pghad.lab.s3 import BUCKET, S3Server
from pghad.system import runas
from tests.support.chaos import connect, wait_for

REPEATS = 3


def _runner(config: Config, bin_dir: Path) -> BackupRunner:
    return BackupRunner(config, Catalog(config.backup.dir, None), bin_dir, make_nodes(config))


def _configs(config: Config, root: Path, server: S3Server) -> tuple[Config, Config]:
    key = root / "repository.key"
    key.write_text(secrets.token_bytes(32).hex())
    key.chmod(0o600)
    local = config.model_copy(
        update={"backup": config.backup.model_copy(update={"dir": root / "local-backups"})}
    )
    repository = RepositoryConfig(
        type="s3",
        endpoint=server.endpoint,
        bucket=BUCKET,
        prefix=f"bench-{int(time.time())}",
        credentials_file=server.credentials_file(),
        encryption_key_file=key,
        local_copy=False,
    )
    s3 = config.model_copy(
        update={
            "backup": config.backup.model_copy(update={"dir": root / "s3-backups"}),
            "repository": repository,
        }
    )
    return local, s3


def _full(runner: BackupRunner, now: datetime) -> BackupRecord:
    os.sync()
    record = asyncio.run(runner.run(now, Requested.FULL))
    assert record.status.value == "ok", record.error
    return record


async def _restore_from_bucket(
    config: Config, runner: BackupRunner, ident: str, target: Path
) -> None:
    async with streamed(config, runner.catalog, ident):
        await restore(runner.catalog, runner.bin_dir, ident, target)


def pgbackrest_answer(config: Config, root: Path) -> dict[str, object]:
    """Whether Debian's pgBackRest can back this PostgreSQL up: its version and its answer to
    stanza-create on node1 (a posix repository; the S3 one needs it to accept the server first)."""
    binary = shutil.which("pgbackrest")
    if binary is None:
        return {"pgbackrest": "not installed (apt-get install pgbackrest)"}
    version = subprocess.run([binary, "version"], capture_output=True, text=True, check=False)
    user = runas.ensure_lab_user()
    repo = root / "pgbackrest"
    repo.mkdir()
    runas.chown_to(repo, user)
    node = config.local_node("node1")
    conf = repo / "pgbackrest.conf"
    conf.write_text(
        f"[global]\nrepo1-path={repo}/repo\nlog-path={repo}\nlock-path={repo}\n"
        f"[bench]\npg1-path={node.data_dir}\npg1-port={node.port}\npg1-user={node.user}\n"
        f"pg1-socket-path={node.socket_dir}\n"
    )
    conf.chmod(0o644)
    argv = [*runas.prefix_for(user), binary, f"--config={conf}", "--stanza=bench"]
    answer = subprocess.run(
        [*argv, "--log-level-console=warn", "stanza-create"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "pgbackrest_version": version.stdout.strip(),
        "pgbackrest_stanza_create_rc": answer.returncode,
        "pgbackrest_stanza_create": " / ".join(
            line.strip() for line in (answer.stdout + answer.stderr).splitlines() if line.strip()
        )[:600],
    }


def s3_phase(config: Config, bin_dir: Path, root: Path, scale: int) -> dict[str, object]:
    server = S3Server.create(root / "s3", 27333).start()
    try:
        return _measure(config, bin_dir, root, server, scale)
    finally:
        server.stop()


def _measure(
    config: Config, bin_dir: Path, root: Path, server: S3Server, scale: int
) -> dict[str, object]:
    local_config, s3_config = _configs(config, root, server)
    local, s3 = _runner(local_config, bin_dir), _runner(s3_config, bin_dir)
    now = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    times: dict[str, list[float]] = {"local": [], "s3": []}
    for attempt in range(REPEATS):  # alternating: neither always gets the warmer cache
        for name, runner in (("local", local), ("s3", s3)):
            record = _full(runner, now + timedelta(minutes=attempt))
            times[name].append(record.duration_s or 0.0)
    result: dict[str, object] = {
        "s3_per_run_full_s": times,
        "local_zstd_full_s": round(statistics.median(times["local"]), 3),
        "s3_full_s": round(statistics.median(times["s3"]), 3),
        "s3_full_bytes": record.size_bytes,
        "s3_full_upload_steps": record.extra,
    }
    with connect(config, "node1") as conn:
        conn.execute(
            f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {scale * 1000}"
        )
    wait_for(lambda: _caught_up(config), timeout=300, what="the standby to catch up")
    chains = {}
    for name, runner in (("local", local), ("s3", s3)):
        os.sync()
        incremental = asyncio.run(runner.run(now + timedelta(days=1), Requested.INCREMENTAL))
        assert incremental.status.value == "ok", incremental.error
        result[f"{name}_incremental_s"] = incremental.duration_s
        chains[name] = incremental.id
    restores: dict[str, list[float]] = {"local": [], "s3": []}
    for attempt in range(REPEATS):
        for name, runner in (("local", local), ("s3", s3)):
            target = root / f"restored-{name}-{attempt}"
            os.sync()
            started = time.monotonic()
            if name == "local":
                asyncio.run(restore(runner.catalog, bin_dir, chains[name], target))
            else:
                asyncio.run(_restore_from_bucket(s3_config, runner, chains[name], target))
            restores[name].append(round(time.monotonic() - started, 3))
            shutil.rmtree(target)
    result["s3_per_run_restore_s"] = restores
    result["local_restore_s"] = round(statistics.median(restores["local"]), 3)
    result["s3_restore_s"] = round(statistics.median(restores["s3"]), 3)
    result["s3_full_vs_local"] = round(
        float(str(result["s3_full_s"])) / float(str(result["local_zstd_full_s"])), 2
    )
    result["s3_restore_vs_local"] = round(
        float(str(result["s3_restore_s"])) / float(str(result["local_restore_s"])), 2
    )
    result.update(pgbackrest_answer(config, root))
    try:
        result.update(pgbackrest_s3.measure(root / "pgbackrest-15", server, scale))
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result["pgbackrest_error"] = str(exc)
    return result


def _caught_up(config: Config) -> bool:
    with connect(config, "node1") as conn:
        row = conn.execute(
            "SELECT pg_current_wal_lsn() = replay_lsn FROM pg_stat_replication"
        ).fetchone()
    return bool(row and row[0])
