"""Backups on the real lab with a real Redis: a simulated cycle, failover, Redis outage, damage."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import zstandard

from pghad.backup.archive.wal_files import DEFAULT_SEGMENT_SIZE, WalName
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupKind, BackupRecord, BackupStatus
from pghad.backup.planner import Requested, is_due
from pghad.backup.restore import restore, verify
from pghad.backup.runner import BackupRunner
from pghad.backup.steps import StepFailed
from pghad.backup.zstd_tar import ARCHIVE
from pghad.config.model import Config
from pghad.daemon.runtime import make_nodes
from pghad.lab.local import free_port
from pghad.nodes import sql as sqlops
from pghad.nodes.base import Role
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin
from tests.support.chaos import connect

from ..conftest import DaemonProcess, Lab, RedisServer

DAY1 = datetime(2026, 3, 1, 2, 0, 5, tzinfo=UTC)
CHECKSUM = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM ledger t"


def write_day(config: Config, primary: str, day: int) -> str:
    """Insert and update rows as a day of traffic would; return the table checksum."""
    with connect(config, primary) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS ledger (id serial PRIMARY KEY, day int, v text)")
        conn.execute(
            "INSERT INTO ledger (day, v) SELECT %s, md5(random()::text) "
            "FROM generate_series(1, 2000)",
            (day,),
        )
        conn.execute("UPDATE ledger SET v = md5(v) WHERE id %% 97 = %s", (day,))
        row = conn.execute(CHECKSUM).fetchone()
    assert row is not None
    return str(row[0])


def runner_for(lab: Lab) -> tuple[Config, BackupRunner]:
    config = lab.config
    catalog = Catalog.of(config)
    bin_dir = pgbin.find_bin_dir(config.pg_bin)
    return config, BackupRunner(config, catalog, bin_dir, make_nodes(config))


def restored_checksum(config: Config, runner: BackupRunner, record: BackupRecord) -> str:
    """Restore `record` into a new directory, start it, read the checksum, stop and remove it."""
    target = config.backup.dir.parent / f"restore-{record.id}"
    port = free_port(30000)
    asyncio.run(restore(runner.catalog, runner.bin_dir, record.id, target, port=port))
    assert (target / "restore-postgresql.log").exists()  # the log stays with what was restored
    node = config.local_node(config.nodes[0].name).model_copy(
        update={"name": "restored", "port": port, "data_dir": target, "socket_dir": None}
    )
    driver = LocalDriver(node, config.auth, runner.bin_dir)
    try:
        probe = config.model_copy(update={"nodes": (node, config.nodes[1])})
        with connect(probe, "restored") as conn:
            row = conn.execute(CHECKSUM).fetchone()
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    finally:
        asyncio.run(driver.stop("fast"))
        shutil.rmtree(target, ignore_errors=True)
    assert row is not None
    return str(row[0])


def test_a_simulated_cycle_full_then_five_incrementals_then_full_and_each_restores(
    lab: Lab,
) -> None:
    config, runner = runner_for(lab)
    at = config.backup.time_of_day
    taken: list[tuple[BackupRecord, str]] = []
    for day in range(7):
        now = DAY1 + timedelta(days=day)
        checksum = write_day(config, "node1", day)
        assert is_due(runner.catalog.records(), now, at)
        record = asyncio.run(runner.run(now))
        assert record.status is BackupStatus.OK, record.error
        assert not is_due(runner.catalog.records(), now + timedelta(hours=3), at)
        taken.append((record, checksum))
    kinds = [r.kind for r, _ in taken]
    assert kinds == [BackupKind.FULL] + [BackupKind.INCREMENTAL] * 5 + [BackupKind.FULL]
    assert taken[5][0].chain == tuple(r.id for r, _ in taken[:6])
    assert taken[0][0].logical_dump and Path(taken[0][0].logical_dump).exists()
    full_size = taken[0][0].size_bytes or 0
    assert all((r.size_bytes or 0) < full_size for r, _ in taken[1:6])
    for record, checksum in taken:
        assert restored_checksum(config, runner, record) == checksum, record.id
    client = redis.Redis.from_url(config.redis.url, decode_responses=True)
    stored = client.hgetall(f"backup:completo:{DAY1.date().isoformat()}")
    assert stored["status"] == "ok" and stored["kind"] == "completo"
    assert stored["verified"] == "true" and int(stored["size_bytes"]) == full_size
    client.close()


def test_missed_days_run_once_when_back(lab: Lab) -> None:
    config, runner = runner_for(lab)
    asyncio.run(runner.run(DAY1))
    back = DAY1 + timedelta(days=4, hours=5)  # the daemon was down for four scheduled runs
    assert is_due(runner.catalog.records(), back, config.backup.time_of_day)
    asyncio.run(runner.run(back))
    assert not is_due(
        runner.catalog.records(), back + timedelta(minutes=1), config.backup.time_of_day
    )


def test_failover_between_backups_makes_the_next_one_full_and_it_restores(lab: Lab) -> None:
    config, runner = runner_for(lab)
    write_day(config, "node1", 1)
    first = asyncio.run(runner.run(DAY1))
    assert first.status is BackupStatus.OK and first.timeline == 1
    node1 = LocalDriver(config.local_node("node1"), config.auth, runner.bin_dir)
    asyncio.run(node1.stop("fast"))
    assert asyncio.run(sqlops.promote(config.node("node2"), config.auth))
    checksum = write_day(config, "node2", 2)
    second = asyncio.run(runner.run(DAY1 + timedelta(days=1)))
    assert second.status is BackupStatus.OK, second.error
    assert second.kind is BackupKind.FULL
    assert "timeline changed from 1 to 2" in second.reason
    assert restored_checksum(config, runner, second) == checksum


def test_backup_succeeds_while_redis_is_down_and_reaches_redis_later(
    lab: Lab, private_redis: RedisServer
) -> None:
    lab.set("redis", "url", f'"{private_redis.url}"')
    _config, runner = runner_for(lab)
    private_redis.stop()
    record = asyncio.run(runner.run(DAY1))
    assert record.status is BackupStatus.OK
    assert runner.catalog.get(record.id) == record
    private_redis.start()
    assert runner.catalog.flush() == 0
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    assert client.hgetall(record.redis_key)["status"] == "ok"
    client.close()


def test_a_corrupted_file_is_caught_by_verify_and_restore(lab: Lab) -> None:
    config, runner = runner_for(lab)
    record = asyncio.run(runner.run(DAY1))
    victim = max(Path(record.path, "base").rglob("*"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[100:108] = b"CORRUPT!"
    victim.write_bytes(bytes(data))
    with pytest.raises(StepFailed, match=rf"{record.id} is damaged: .*{victim.name}"):
        asyncio.run(verify(runner.bin_dir, record))
    with pytest.raises(StepFailed, match="damaged"):
        asyncio.run(restore(runner.catalog, runner.bin_dir, record.id, config.backup.dir / "r"))
    assert not (config.backup.dir / "r").exists()
    cli = subprocess.run(
        [sys.executable, "-m", "pghad", "verify", record.id, "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 1 and "damaged" in cli.stderr


def test_failed_backups_record_the_step_and_the_next_run_is_unaffected(lab: Lab) -> None:
    config, runner = runner_for(lab)
    first = asyncio.run(runner.run(DAY1))
    nodes = [config.local_node(n.name) for n in config.nodes]
    drivers = [LocalDriver(n, config.auth, runner.bin_dir) for n in nodes]
    for driver in drivers:
        asyncio.run(driver.stop("fast"))
    down = asyncio.run(runner.run(DAY1 + timedelta(days=1)))
    assert down.status is BackupStatus.FAILED
    assert down.error is not None and down.error.startswith("step select-source:")
    asyncio.run(drivers[0].start(Role.PRIMARY))
    asyncio.run(drivers[1].start(Role.STANDBY, config.node("node1")))
    time.sleep(1)
    after = asyncio.run(runner.run(DAY1 + timedelta(days=2)))
    assert after.status is BackupStatus.OK, after.error
    assert after.parent == first.id  # the failed record is never a parent

    blocker = config.backup.dir.parent / "not-a-dir"
    blocker.write_text("")
    lab.set("backup", "dir", f'"{blocker / "backups"}"')
    config, broken = runner_for(lab)
    failed = asyncio.run(broken.run(DAY1 + timedelta(days=3)))
    assert failed.status is BackupStatus.FAILED
    assert failed.error is not None and "step prepare" in failed.error
    client = redis.Redis.from_url(config.redis.url, decode_responses=True)
    assert client.hgetall(failed.redis_key)["status"] == "failed"
    client.close()


def test_cli_backup_backups_and_restore(lab: Lab) -> None:
    def pghad(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pghad", *args, "--config", str(lab.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )

    taken = pghad("backup", "--kind", "full")
    assert taken.returncode == 0, taken.stderr
    listing = pghad("backups")
    assert "completo" in listing.stdout and "ok" in listing.stdout
    unknown = pghad("restore", "nope", "--target", str(lab.dir / "r"))
    assert unknown.returncode == 1 and "no backup 'nope'" in unknown.stderr
    a_file = lab.dir / "not-a-directory"
    a_file.write_text("")
    backup_id = next(ln.split()[0] for ln in listing.stdout.splitlines() if ln.startswith("compl"))
    onto_file = pghad("restore", backup_id, "--target", str(a_file))
    assert onto_file.returncode == 1 and "is a file" in onto_file.stderr, onto_file.stderr


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_chain_verifies_and_restores(lab: Lab, compression: str) -> None:
    lab.set("backup", "compression", f'"{compression}"')
    config, runner = runner_for(lab)
    write_day(config, "node1", 1)
    full = asyncio.run(runner.run(DAY1))
    checksum = write_day(config, "node1", 2)
    incremental = asyncio.run(runner.run(DAY1 + timedelta(days=1)))
    assert [full.status, incremental.status] == [BackupStatus.OK, BackupStatus.OK]
    assert incremental.kind is BackupKind.INCREMENTAL and incremental.compression == compression
    assert (Path(full.path) / ("base.tar.gz" if compression == "gzip" else ARCHIVE)).exists()
    asyncio.run(verify(runner.bin_dir, incremental))
    assert restored_checksum(config, runner, incremental) == checksum


def test_a_changed_file_inside_a_zstd_backup_is_caught_by_verify(lab: Lab) -> None:
    lab.set("backup", "compression", '"zstd"')
    _config, runner = runner_for(lab)
    record = asyncio.run(runner.run(DAY1))
    archive = Path(record.path) / ARCHIVE
    raw = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(archive.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        files = [m for m in tar if m.isfile() and not m.name.startswith("pg_wal/")]
        victim = max(files, key=lambda m: m.size)
    raw[victim.offset_data + 100 : victim.offset_data + 108] = b"CORRUPT!"
    archive.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    with pytest.raises(StepFailed, match=rf"{record.id} is damaged: .*{victim.name}"):
        asyncio.run(verify(runner.bin_dir, record))
    target = Path(record.path).parent / "restored"
    with pytest.raises(StepFailed, match=rf"{record.id} is damaged: .*{victim.name}"):
        asyncio.run(restore(runner.catalog, runner.bin_dir, record.id, target))
    assert not target.exists()
    archive.write_bytes(archive.read_bytes()[:-1000])  # cut short
    with pytest.raises(StepFailed, match="damaged"):
        asyncio.run(verify(runner.bin_dir, record))


def test_damaged_wal_inside_a_zstd_backup_is_caught_by_verify(lab: Lab) -> None:
    """The manifest lists no WAL file, so no checksum covers it: verify parses the WAL from the
    backup's start to its end, as pg_verifybackup does for a plain backup."""
    lab.set("backup", "compression", '"zstd"')
    _config, runner = runner_for(lab)
    record = asyncio.run(runner.run(DAY1))
    asyncio.run(verify(runner.bin_dir, record))  # whole: it parses
    archive = Path(record.path) / ARCHIVE
    start = json.loads((Path(record.path) / "backup_manifest").read_text())["WAL-Ranges"][0]
    high, low = (int(part, 16) for part in start["Start-LSN"].split("/"))
    lsn = (high << 32) | low
    raw = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(archive.read_bytes()))
    name = "pg_wal/" + WalName(int(start["Timeline"]), lsn // DEFAULT_SEGMENT_SIZE).file_name()
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        segment = tar.getmember(name)
    at = segment.offset_data + lsn % segment.size + 24  # the first record's data
    raw[at : at + 16] = b"DAMAGED WAL DATA"
    archive.write_bytes(zstandard.ZstdCompressor().compress(bytes(raw)))
    with pytest.raises(StepFailed, match=rf"{record.id} is damaged: its WAL does not parse"):
        asyncio.run(verify(runner.bin_dir, record))


def test_three_fulls_in_one_day_keep_their_own_dumps_and_redis_refills(
    lab: Lab, private_redis: RedisServer
) -> None:
    lab.set("redis", "url", f'"{private_redis.url}"')
    lab.set("backup", "keep_cycles", "2")
    _config, runner = runner_for(lab)
    records = []
    for minute in range(3):
        record = asyncio.run(runner.run(DAY1 + timedelta(minutes=minute), Requested.FULL))
        assert record.status is BackupStatus.OK, record.error
        records.append(record)
        runner.apply_retention()
    dumps = [Path(r.logical_dump or "") for r in records]
    assert len(set(dumps)) == 3
    assert dumps[0].name == "backup_completo_20260301.sql.gz"
    assert not dumps[0].exists()  # its backup was deleted by retention, with it
    assert dumps[1].exists() and dumps[2].exists()  # kept backups keep their dumps
    assert dumps[1].stat().st_mode & 0o777 == 0o600
    assert runner.config.backup.dir.stat().st_mode & 0o777 == 0o700
    kept = [r.id for r in runner.catalog.records()]
    assert kept == [records[1].id, records[2].id]
    private_redis.stop()  # Redis comes back empty
    private_redis.start()
    assert runner.catalog.flush() == 0
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    assert sorted(client.keys("backup:*")) == sorted(r.redis_key for r in records[1:])
    client.close()


def test_cli_backup_is_taken_by_the_running_daemon(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    taken = subprocess.run(
        [sys.executable, "-m", "pghad", "backup", "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert taken.returncode == 0, taken.stderr
    assert "taken by the daemon" in taken.stdout
    event = daemon.wait_event(lambda e: e.get("event") == "backup", 10, "the backup event")
    assert event["status"] == "ok" and event["logical_dump"]


def test_a_full_disk_during_the_dump_fails_cleanly_and_the_next_backup_works(lab: Lab) -> None:
    """The backups directory on a small tmpfs: the base backup fits, its dump does not."""
    config = lab.config
    with connect(config, "node1") as conn:  # about 60 MB of gzip-resistant dump
        conn.execute(
            "CREATE TABLE noise AS SELECT md5(random()::text) || md5(random()::text) "
            "|| md5(random()::text) AS v FROM generate_series(1, 1200000)"
        )
    _config, sizing = runner_for(lab)
    measured = asyncio.run(sizing.run(DAY1, Requested.FULL))
    assert measured.status is BackupStatus.OK, measured.error
    base = measured.size_bytes or 0
    dump = measured.logical_dump_bytes or 0
    assert dump > 40_000_000
    disk = lab.dir / "small-disk"
    disk.mkdir()
    filler_bytes = dump
    size = base + filler_bytes + dump // 2
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * filler_bytes)
        lab.set("backup", "dir", f'"{disk / "backups"}"')
        _config, runner = runner_for(lab)
        failed = asyncio.run(runner.run(DAY1 + timedelta(days=1), Requested.FULL))
        assert failed.status is BackupStatus.FAILED
        assert "logical-dump" in (failed.error or ""), failed.error
        left = sorted(p.name for p in (disk / "backups").iterdir())
        assert left == [".lock", "catalog.json"], left  # no partial backup, dump or temp file
        assert runner.catalog.get(failed.id) == failed
        filler.unlink()  # the operator frees space
        ok = asyncio.run(runner.run(DAY1 + timedelta(days=1, hours=1), Requested.AUTO))
        assert ok.status is BackupStatus.OK, ok.error
        assert ok.id != failed.id and ok.logical_dump and Path(ok.logical_dump).exists()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_two_clusters_share_a_redis_without_overwriting_each_other(
    lab: Lab, private_redis: RedisServer
) -> None:
    lab.set("redis", "url", f'"{private_redis.url}"')
    config, runner = runner_for(lab)
    record = asyncio.run(runner.run(DAY1, Requested.FULL))
    assert record.status is BackupStatus.OK, record.error
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    assert client.hget(record.redis_key, "cluster") == config.cluster.name
    # Another cluster, same default key names, a backup the same day: it must not take the key.
    other = Catalog(config.backup.dir.parent / "other", private_redis.url, "", "other-cluster")
    assert other.save(record.with_(path="/elsewhere")) is True
    assert client.hget(record.redis_key, "path") == record.path
    assert client.hget(record.redis_key, "cluster") == config.cluster.name
    # With a prefix of its own, it has its own keys.
    prefixed = Catalog(config.backup.dir.parent / "other2", private_redis.url, "b:", "b")
    prefixed.save(record.with_(path="/elsewhere"))
    assert client.hget(f"b:{record.redis_key}", "path") == "/elsewhere"
    # The same key names for two clusters are found and named (pghad check, a startup event).
    assert other.other_clusters() == {config.cluster.name}
    assert prefixed.other_clusters() == set()
    client.close()
