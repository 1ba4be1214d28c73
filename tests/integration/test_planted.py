"""What the PostgreSQL user (the data owner) or another local user can plant on the host, tried
against pghad run as root on the real lab: links, FIFOs, forged files. None may turn root's
work against the host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from pghad.backup.model import BackupKind, BackupRecord, BackupStatus
from pghad.lab.local import free_port
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin, procs
from tests.support.chaos import kill9, wait_for

from ..conftest import REPO, DaemonProcess, Lab

ATTACKER = "nobody"  # an unprivileged local user, not the data owner


def as_user(user: str, *argv: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True, capture_output=True)


def pghad(lab: Lab, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pghad", *args, "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=timeout,
    )


@contextlib.contextmanager
def bystanders(where: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two unrelated processes working in `where`: one of root's, one of the data owner's."""
    running = [
        subprocess.Popen(["sleep", "300"], cwd=where),
        subprocess.Popen(["sleep", "300"], cwd=where, user="pghad"),
    ]
    try:
        yield running
    finally:
        for process in running:
            process.kill()
            process.wait()


def test_a_data_directory_link_at_a_fence_kills_nothing_else(lab: Lab, work_root: Path) -> None:
    """The data owner kills its primary and puts a link to another directory in place of its
    data directory: fencing must not SIGKILL the processes working there."""
    config = lab.config
    node = config.local_node("node1")
    kill9(config.node("node1"))
    victim = work_root / f"victim-{time.monotonic_ns()}"
    victim.mkdir(mode=0o755)
    moved = node.data_dir.with_name("data.moved")
    with bystanders(victim) as running:
        as_user("pghad", "mv", str(node.data_dir), str(moved))
        as_user("pghad", "ln", "-s", str(victim), str(node.data_dir))
        try:
            driver = LocalDriver(node, config.auth, pgbin.find_bin_dir(config.pg_bin))
            detail = asyncio.run(driver.fence())
            alive = [procs.is_alive(p.pid) for p in running]
        finally:
            node.data_dir.unlink()
            moved.rename(node.data_dir)
    assert alive == [True, True], detail
    assert "killed" not in detail.replace("nothing killed", "")
    victim.rmdir()


def test_a_fifo_for_postmaster_pid_does_not_freeze_the_loop(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """A FIFO where postmaster.pid should be (the data owner's to plant): the daemon's rounds go
    on and it stays healthy."""
    daemon.start().wait_healthy()
    assert daemon.post("/pause")[0] == 200  # nothing restarts node2 behind the test's back
    config = lab.config
    node = config.local_node("node2")
    kill9(config.node("node2"))
    pid_file = node.data_dir / "postmaster.pid"
    wait_for(lambda: procs.live_postmaster(node.data_dir) is None, 10, what="node2 down")
    time.sleep(0.5)  # its backends leave too
    pid_file.unlink(missing_ok=True)
    as_user("pghad", "mkfifo", str(pid_file))
    try:
        time.sleep(2)
        rounds = []
        for _ in range(4):
            code, _body = daemon.http("GET", "/health")
            rounds.append(code)
            time.sleep(1)
    finally:
        pid_file.unlink(missing_ok=True)
    assert rounds == [200, 200, 200, 200]
    assert daemon.process is not None and daemon.process.poll() is None


@pytest.fixture
def backup_id(lab: Lab) -> str:
    taken = pghad(lab, "backup", "--kind", "full")
    assert taken.returncode == 0, taken.stderr
    listing = pghad(lab, "backups")
    return next(ln.split()[0] for ln in listing.stdout.splitlines() if ln.startswith("compl"))


def test_a_planted_restore_target_and_a_tmp_lock_fifo_are_refused(
    lab: Lab, work_root: Path, backup_id: str
) -> None:
    """An unprivileged user makes the restore target a link to a directory only root may
    write: root writes nothing there and gives nothing away. A FIFO planted at
    /tmp/.s.PGSQL.<port>.lock does not hang a restore that starts its server."""
    shared = work_root / f"shared-{time.monotonic_ns()}"  # like /tmp: anyone may create in it
    shared.mkdir()
    shared.chmod(0o1777)
    secret = work_root / f"root-only-{time.monotonic_ns()}"
    secret.mkdir(mode=0o700)
    planted = shared / "restored"
    as_user(ATTACKER, "ln", "-s", str(secret), str(planted))
    port = free_port(33000 + os.getpid() % 500)
    lock = Path(f"/tmp/.s.PGSQL.{port}.lock")
    as_user(ATTACKER, "mkfifo", str(lock))
    restored = shared / "fine"
    try:
        refused = pghad(lab, "restore", backup_id, "--target", str(planted), "--port", str(port))
        assert refused.returncode != 0
        assert "--target" in refused.stderr and str(planted) in refused.stderr, refused.stderr
        assert list(secret.iterdir()) == []
        assert os.stat(secret).st_uid == 0 and os.stat(secret).st_mode & 0o777 == 0o700
        # The same restore into a path root makes itself works, FIFO in /tmp or not.
        done = pghad(lab, "restore", backup_id, "--target", str(restored), "--port", str(port))
        assert done.returncode == 0, done.stderr
        owner = pwd.getpwuid(os.stat(restored / "PG_VERSION").st_uid).pw_name
        assert owner == "pghad"
    finally:
        pid = procs.live_postmaster(restored)
        if pid is not None:
            os.kill(pid, 9)
            wait_for(lambda: not procs.processes_in(restored), 10, what="restored server gone")
        lock.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(shared), str(secret)], check=False)


def test_a_planted_daemon_lock_link_truncates_nothing(
    lab: Lab, daemon: DaemonProcess, work_root: Path
) -> None:
    """The state directory inside the data owner's tree (as the shipped config once had it):
    that user links daemon.lock to a file of root's. pghad refuses the directory, naming it."""
    precious = work_root / f"precious-{time.monotonic_ns()}"
    precious.write_text("root's data\n")
    state = lab.dir / "node1" / "state"  # node1/ is the data owner's
    as_user("pghad", "mkdir", str(state))
    as_user("pghad", "ln", "-s", str(precious), str(state / "daemon.lock"))
    lab.set("state", "dir", f'"{state}"')
    daemon.start()
    assert daemon.process is not None
    with contextlib.suppress(subprocess.TimeoutExpired):
        daemon.process.wait(timeout=15)
    log = daemon.log_path.read_text()
    assert precious.read_text() == "root's data\n"
    assert daemon.process.returncode not in (None, 0), log[-2000:]
    assert "state.dir" in log and str(state) in log, log[-2000:]
    precious.unlink()


def test_a_forged_catalog_deletes_nothing_outside(lab: Lab, work_root: Path) -> None:
    """The backups directory inside the data owner's tree: that user writes a catalog.json
    whose old backups are directories of root's. A backup (and its retention) must not delete
    them: the directory is refused, naming it."""
    victims = []
    records = []
    for day in (1, 2, 3):
        victim = work_root / f"victim-{day}-{time.monotonic_ns()}"
        victim.mkdir()
        (victim / "keep").write_text("root's\n")
        victims.append(victim)
        record = BackupRecord(
            id=f"completo-2020-01-0{day}",
            kind=BackupKind.FULL,
            status=BackupStatus.OK,
            day=date(2020, 1, day),
            started_at=f"2020-01-0{day}T02:00:00+00:00",
            path=str(victim),
        )
        records.append(record.to_dict())
    backups = lab.dir / "node1" / "backups"
    as_user("pghad", "mkdir", str(backups))
    forged = json.dumps({"records": records, "redis_pending": [], "redis_deleted": []})
    subprocess.run(
        ["runuser", "-u", "pghad", "--", "tee", str(backups / "catalog.json")],
        input=forged,
        text=True,
        check=True,
        capture_output=True,
    )
    lab.set("backup", "dir", f'"{backups}"')
    lab.set("archive", "enabled", "false")
    try:
        taken = pghad(lab, "backup", "--kind", "full")
        assert all((v / "keep").exists() for v in victims), taken.stderr
        assert taken.returncode != 0
        assert "backup.dir" in taken.stderr and str(backups) in taken.stderr, taken.stderr
    finally:
        for victim in victims:
            subprocess.run(["rm", "-rf", str(victim)], check=False)


def test_a_reload_that_empties_the_token_off_loopback_is_refused(
    lab: Lab, daemon: DaemonProcess
) -> None:
    lab.set("api", "bind", '"0.0.0.0"')
    lab.set("api", "token", '"t0ken-before"')
    daemon.start().wait_healthy()
    lab.set("api", "token", '""')
    daemon.signal(signal.SIGHUP)
    daemon.wait_event(lambda e: e.get("event") == "config_reload_failed", 15, "reload refused")
    assert daemon.http("POST", "/pause")[0] == 401
    assert daemon.http("POST", "/pause", token="t0ken-before")[0] == 200
