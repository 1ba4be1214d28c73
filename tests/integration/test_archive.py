"""The continuous WAL archive and point-in-time restore, on the real lab with a real Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pghad.backup.archive.wal_files import archived, parse_name, segment_of
from pghad.backup.catalog import Catalog
from pghad.backup.retention import prune_archive
from pghad.config.model import Config
from pghad.decide.observation import parse_lsn
from pghad.decide.sync_names import ARCHIVE
from pghad.lab.local import free_port
from pghad.system import pgbin, procs, runas
from tests.support.chaos import WRITER_TABLE, Writer, connect, kill9, streaming_standbys, wait_for

from ..conftest import DaemonProcess, Lab

REPO = Path(__file__).resolve().parents[2]


def archive_caught_up(daemon: DaemonProcess, timeout: float = 20) -> dict[str, Any]:
    """Wait until the archive streams from the primary and has all of its WAL."""
    deadline = time.monotonic() + timeout
    archive: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, body = daemon.http("GET", "/status", token=daemon.lab.config.api.token)
        archive = body.get("archive") or {} if code == 200 else {}
        if archive.get("streaming") and archive.get("lag_bytes") == 0:
            return archive
        time.sleep(0.2)
    raise AssertionError(f"the archive did not catch up in {timeout} s: {archive}")


def start_with_a_full_backup(daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    code, body = daemon.post("/backups?kind=full")
    assert code == 200 and body["backup"]["status"] == "ok", body
    archive_caught_up(daemon)


def restore_cli(lab: Lab, target: Path, *point: str) -> subprocess.CompletedProcess[str]:
    port = free_port(31000)
    argv = [sys.executable, "-m", "pghad", "restore", "--config", str(lab.config_path)]
    result = subprocess.run(
        [*argv, "--target", str(target), *point, "--port", str(port)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
    )
    logs = [p.read_text()[-3000:] for p in target.glob("*.log")] if target.is_dir() else []
    assert result.returncode == 0, f"{result.stderr}\n{''.join(logs)}"
    return result


def stop_restored(bin_dir: Path, target: Path) -> None:
    argv = [str(bin_dir / "pg_ctl"), "stop", "-D", str(target), "-m", "fast", "-s"]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", runas.owner_of(target), "--", *argv]
    subprocess.run(argv, capture_output=True, check=False, timeout=60)


def restored_rows(config: Config, target: Path, port: int) -> tuple[set[int], int]:
    node = config.local_node(config.nodes[0].name).model_copy(
        update={"name": "restored", "port": port, "data_dir": target, "socket_dir": None}
    )
    probe = config.model_copy(update={"nodes": (node, config.nodes[1])})
    try:
        with connect(probe, "restored") as conn:
            ids = {int(r[0]) for r in conn.execute(f"SELECT id FROM {WRITER_TABLE}").fetchall()}
            row = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    finally:
        stop_restored(pgbin.find_bin_dir(config.pg_bin), target)
    assert row is not None
    return ids, int(row[0])


def lose_everything_then_restore_latest(
    lab: Lab, daemon: DaemonProcess, writer: Writer
) -> set[int]:
    """Both data directories gone (servers already killed): `restore --latest`, its row ids."""
    config = lab.config
    writer.stop()
    daemon.stop()
    procs.reap_postgres_zombies()
    for node in config.nodes:
        shutil.rmtree(config.local_node(node.name).data_dir)
    target = lab.dir / "after-loss"
    result = restore_cli(lab, target, "--latest")
    ids, _timeline = restored_rows(config, target, port_of(result))
    return ids


def port_of(result: subprocess.CompletedProcess[str]) -> int:
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("started on"))
    return int(line.split(":")[1].split(";")[0])


def test_restore_to_a_time_after_a_failover_has_exactly_the_rows_committed_before_it(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    start_with_a_full_backup(daemon)
    writer = Writer(config, pause_s=0.05).start()
    time.sleep(2)
    kill9(config.node("node1"))
    daemon.wait_event(lambda e: e.get("event") == "failover", 20, "failover")
    daemon.wait_event(
        lambda e: e.get("event") == "archive_started" and e.get("node") == "node2", 20, "archive"
    )
    time.sleep(3)
    writer.stop()
    archive_caught_up(daemon)
    after = [c for c in writer.acked if c.node == "node2"]
    assert len(after) > 20, f"too few commits on the new primary: {len(after)}"
    chosen = after[len(after) // 2]
    # The next insert starts at least pause_s after this ack: the point falls between the two.
    point = datetime.fromtimestamp(chosen.wall + 0.005).astimezone()
    with connect(config, "node2") as conn:
        live = {int(r[0]) for r in conn.execute(f"SELECT id FROM {WRITER_TABLE}").fetchall()}

    target = lab.dir / "pitr"
    result = restore_cli(lab, target, "--to", point.isoformat())
    ids, timeline = restored_rows(config, target, port_of(result))

    assert ids == {i for i in live if i <= chosen.id}
    assert timeline >= 3  # the failover's timeline (2), then the restore's own promotion
    assert "MB/s" in result.stdout


def test_both_nodes_lost_restore_latest_loses_at_most_the_last_second(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    start_with_a_full_backup(daemon)
    writer = Writer(config, pause_s=0.01).start()
    time.sleep(3)
    lost_at = time.time()
    for node in config.nodes:
        kill9(node)
    ids = lose_everything_then_restore_latest(lab, daemon, writer)

    acked = [c for c in writer.acked if c.wall < lost_at]
    assert len(acked) > 50
    missing = [c for c in acked if c.id not in ids]
    assert all(c.wall > lost_at - 1.0 for c in missing), (
        f"{len(missing)} acknowledged commits older than a second are missing"
    )
    print(f"missing after --latest: {len(missing)} of {len(acked)}")


def test_the_archive_keeps_no_slot_on_a_standby_and_follows_a_switchover(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    archive_caught_up(daemon)
    code, body = daemon.post("/switchover")
    assert code == 200, body
    daemon.wait_event(
        lambda e: e.get("event") == "archive_started" and e.get("node") == "node2", 20, "archive"
    )
    archive = archive_caught_up(daemon)
    assert archive["source"] == "node2"

    def slots(node: str) -> list[Any]:
        with connect(config, node) as conn:
            return conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()

    deadline = time.monotonic() + 15
    while slots("node1") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert slots("node1") == []  # a slot on the standby would pin its WAL forever
    assert slots("node2") == [("pghad_archive",)]
    assert (config.archive.path(config.backup.dir) / "00000002.history").exists()


def test_synchronous_archive_standby_down_then_both_lost_loses_nothing(
    lab: Lab, daemon: DaemonProcess
) -> None:
    lab.set("archive", "synchronous", "true")
    lab.set("cluster", "auto_rejoin", "false")  # the standby stays down
    config = lab.config
    start_with_a_full_backup(daemon)
    wait_for(
        lambda: streaming_standbys(config, "node1") == {"node2": "sync", ARCHIVE: "sync"},
        timeout=15,
        what="commits to wait for the standby and the archive",
    )
    writer = Writer(config, pause_s=0.01).start()
    time.sleep(1)
    kill9(config.node("node2"))  # the standby is gone: the archive alone holds commits
    wait_for(
        lambda: primary_waits_for(config) == f'"{ARCHIVE}"',
        timeout=15,
        what="synchronous replication relaxed to the archive",
    )
    time.sleep(2)
    lost_at = time.time()
    kill9(config.node("node1"))
    ids = lose_everything_then_restore_latest(lab, daemon, writer)

    acked = [c for c in writer.acked if c.wall < lost_at + 1]
    standby_gone = [c for c in acked if c.node == "node1"]
    assert len(standby_gone) > 50
    assert [c.id for c in acked if c.id not in ids] == []  # not one acknowledged commit lost


def primary_waits_for(config: Config) -> str:
    with connect(config, "node1") as conn:
        row = conn.execute("SHOW synchronous_standby_names").fetchone()
    return str(row[0]) if row else ""


def test_retention_prunes_only_wal_older_than_the_kept_backup_and_restore_to_lsn_works(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    start_with_a_full_backup(daemon)  # the backup retention is about to drop
    with connect(config, "node1") as conn:
        conn.execute("CREATE TABLE marks (n int)")
        for n in range(3):  # WAL the dropped backup needed and the kept one does not
            conn.execute("INSERT INTO marks VALUES (%s)", (n,))
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")  # a restartpoint for the standby, where the backup starts
    time.sleep(1)
    code, body = daemon.post("/backups?kind=full")
    assert code == 200 and body["backup"]["status"] == "ok", body
    kept = Catalog(config.backup.dir, None).get(body["backup"]["id"])
    assert kept is not None
    with connect(config, "node1") as conn:
        conn.execute("INSERT INTO marks VALUES (10)")
        lsn_row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        conn.execute("INSERT INTO marks VALUES (11)")
        conn.execute("SELECT pg_switch_wal()")
    assert lsn_row is not None
    archive_caught_up(daemon)
    daemon.stop()

    archive = config.archive.path(config.backup.dir)
    before = set(archived(archive))
    pruned = prune_archive(config, [kept])
    start = parse_lsn(kept.start_lsn)
    assert pruned and start is not None
    first_needed = segment_of(start)
    gone = {p.name.removesuffix(".zst") for p in pruned}
    older = {n for n in before if (wal := parse_name(n)) and wal.segno < first_needed}
    assert gone == older  # every segment before the kept backup's start, and nothing else
    assert set(archived(archive)) == before - gone

    target = lab.dir / "to-lsn"
    result = restore_cli(lab, target, "--to-lsn", str(lsn_row[0]))
    assert kept.id in result.stdout
    port = port_of(result)
    probe = config.local_node("node1").model_copy(
        update={"name": "restored", "port": port, "data_dir": target, "socket_dir": None}
    )
    try:
        restored = config.model_copy(update={"nodes": (probe, config.nodes[1])})
        with connect(restored, "restored") as c:
            marks = sorted(int(r[0]) for r in c.execute("SELECT n FROM marks").fetchall())
    finally:
        stop_restored(pgbin.find_bin_dir(config.pg_bin), target)
    assert marks == [0, 1, 2, 10]
