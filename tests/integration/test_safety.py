"""Safety and security on the real lab: planted links, hostile clients, lost servers and data."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import pytest

from pghad.errors import NodeError
from pghad.nodes.base import Role
from pghad.nodes.conninfo import clone_application_name, replication_conninfo
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin, procs, runas
from tests.support.chaos import (
    Writer,
    connect,
    is_writable,
    kill9,
    lose_data_dir,
    streaming_standbys,
    wait_for,
)

from ..conftest import DaemonProcess, Lab, RedisServer


def _driver(lab: Lab, name: str) -> LocalDriver:
    config = lab.config
    return LocalDriver(config.local_node(name), config.auth, pgbin.find_bin_dir(config.pg_bin))


def _raw(daemon: DaemonProcess, method: str, path: str, headers: dict[str, str]) -> int:
    return _raw_response(daemon, method, path, headers)[0]


def _raw_response(
    daemon: DaemonProcess, method: str, path: str, headers: dict[str, str]
) -> tuple[int, Mapping[str, str]]:
    response = httpx.request(method, daemon.api + path, headers=headers, timeout=30)
    return response.status_code, response.headers


def test_a_planted_link_at_the_log_file_is_refused(lab: Lab) -> None:
    driver = _driver(lab, "node2")
    asyncio.run(driver.stop())
    victim = Path("/root") / f"pghad-victim-{os.getpid()}"
    driver.log_file.unlink(missing_ok=True)
    driver.log_file.symlink_to(victim)  # what the PostgreSQL user could do: it owns the dir
    with pytest.raises(NodeError, match="refusing"):
        asyncio.run(driver.start(Role.STANDBY, lab.config.node("node1")))
    assert not victim.exists()
    conf = driver.data_dir / "pghad.node.conf"
    conf.unlink()
    conf.symlink_to(victim)
    driver.log_file.unlink()
    with pytest.raises(NodeError, match="refusing"):
        asyncio.run(driver.start(Role.STANDBY, lab.config.node("node1")))
    assert not victim.exists()


def test_foreign_origin_and_host_are_refused_and_change_nothing(
    lab: Lab, daemon: DaemonProcess
) -> None:
    daemon.start().wait_healthy()
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    assert _raw(daemon, "POST", "/failover?force=true", evil) == 403
    assert _raw(daemon, "POST", "/switchover", {"Host": "evil.example:8088"}) == 403
    assert _raw(daemon, "GET", "/status", {"Host": "rebound.example"}) == 403
    assert is_writable(lab.config, "node1") is True
    assert _raw(daemon, "GET", "/", {}) == 200  # the manual's plain curl still works
    code, headers = _raw_response(daemon, "DELETE", "/status", {})
    assert code == 405 and headers.get("allow") == "GET"


def test_a_flood_of_idle_connections_does_not_stop_the_daemon(
    lab: Lab, daemon: DaemonProcess
) -> None:
    daemon.start(prefix=["prlimit", "--nofile=256:256", "--"]).wait_healthy()
    host, port = daemon.api.removeprefix("http://").split(":")
    idle = []
    for _ in range(400):
        try:
            idle.append(socket.create_connection((host, int(port)), timeout=2))
        except OSError:
            break
    time.sleep(3)
    started = time.monotonic()
    try:
        kill9(lab.config.node("node2"))  # something to decide about while flooded
        wait_for(
            lambda: streaming_standbys(lab.config, "node1").get("node2") is not None,
            timeout=20,
            what="node2 restarted while the API is flooded",
        )
    finally:
        for sock in idle:
            sock.close()
    assert daemon.process is not None and daemon.process.poll() is None
    assert time.monotonic() - started < 20
    wait_for(lambda: daemon.http("GET", "/health")[0] == 200, 15, what="healthy after the flood")
    # Accepting a burst must not take the descriptors the daemon's own work needs.
    assert "Too many open files" not in daemon.log_path.read_text()


def test_bad_utf8_reload_and_a_trigger_directory_are_errors_not_crashes(
    lab: Lab, daemon: DaemonProcess
) -> None:
    daemon.start().wait_healthy()
    original = lab.config_path.read_bytes()
    lab.config_path.write_bytes(original + b"\n# caf\xe9\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event(lambda e: e.get("event") == "config_reload_failed", 10, "reload failure")
    lab.config_path.write_bytes(original)
    (lab.config.state.dir / "failback.trigger").mkdir()
    daemon.wait_event(
        lambda e: e.get("event") == "failback_trigger_unusable", 10, "trigger directory error"
    )
    time.sleep(2)
    assert daemon.process is not None and daemon.process.poll() is None
    assert daemon.http("GET", "/health")[0] == 200


def test_a_crashed_standby_streams_again_without_the_daemons_secrets(
    lab: Lab, daemon: DaemonProcess
) -> None:
    daemon.start(extra_env={"PGHAD_API_TOKEN": "secret-token-for-the-test"}).wait_healthy()
    node2 = lab.config.node("node2")
    kill9(node2)
    killed = time.monotonic()
    wait_for(
        lambda: streaming_standbys(lab.config, "node1").get("node2") is not None,
        timeout=10,
        what="node2 streaming again",
    )
    assert time.monotonic() - killed < 10
    pid = procs.live_postmaster(node2.data_dir)
    assert pid is not None
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"secret-token-for-the-test" not in environ
    assert b"PGHAD_API_TOKEN" not in environ


@pytest.mark.parametrize("node", ["node2", "node1"])
def test_a_lost_data_directory_is_rebuilt(lab: Lab, daemon: DaemonProcess, node: str) -> None:
    """node2: a standby's data directory removed; node1: the primary's, so it fails over first."""
    daemon.start().wait_healthy()
    config = lab.config
    lost = config.node(node)
    with connect(config, "node1") as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    kill9(lost)
    lose_data_dir(config.local_node(node).data_dir)
    primary = "node2" if node == "node1" else "node1"
    wait_for(
        lambda: (
            is_writable(config, node) is False
            and streaming_standbys(config, primary).get(node) is not None
        ),
        timeout=60,
        what=f"{node} rebuilt and streaming from {primary}",
    )
    with connect(config, node) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)
    daemon.wait_event(  # recorded when the loop collects the finished action
        lambda e: str(e.get("method", "")).startswith("pg_basebackup"), 10, "the copy recorded"
    )


def _sync_names(lab: Lab) -> str | None:
    try:
        with connect(lab.config, "node1", timeout=1) as conn:
            row = conn.execute("SHOW synchronous_standby_names").fetchone()
    except Exception:
        return None
    return str(row[0]) if row else None


@pytest.mark.parametrize("attempt", range(int(os.environ.get("PGHAD_CRASH_REPEAT", "2"))))
def test_daemon_killed_right_after_relaxing_sync_never_promotes_a_stale_standby(
    lab: Lab, daemon: DaemonProcess, attempt: int
) -> None:
    """kill -9 of the daemon the moment sync is relaxed; the primary then takes writes alone
    and dies; the restarted daemon must not promote the standby (it lacks those commits)."""
    lab.set("cluster", "auto_rejoin", "false")
    config = lab.config
    daemon.start().wait_healthy()
    node2 = _driver(lab, "node2")
    asyncio.run(node2.stop())
    deadline = time.monotonic() + 20
    while _sync_names(lab) not in ("", None) and time.monotonic() < deadline:
        time.sleep(0.005)
    daemon.kill9()
    assert _sync_names(lab) == ""
    acked = []
    with connect(config, "node1") as conn:
        conn.execute("CREATE TABLE alone (v int)")
        for value in range(50):
            conn.execute("INSERT INTO alone VALUES (%s)", (value,))
            acked.append(value)
    kill9(config.node("node1"))
    asyncio.run(node2.start(Role.STANDBY, config.node("node1")))
    daemon.start()
    daemon.wait_event(
        lambda e: e.get("code") in ("standby_ineligible", "failover"), 20, "a failover decision"
    )
    time.sleep(3)
    assert daemon.decisions("failover") == []
    assert is_writable(config, "node2") is False
    assert len(acked) == 50  # every one of them stays on node1, which was not replaced


def _round_stamp(daemon: DaemonProcess) -> float | None:
    try:
        _code, text = daemon.http("GET", "/metrics")
    except httpx.TransportError:
        return None
    for line in str(text).splitlines():
        if line.startswith("pghad_last_round_timestamp_seconds "):
            return float(line.split()[1])
    return None


def test_redis_dropping_packets_does_not_delay_probe_rounds_during_a_backup(
    lab: Lab, daemon: DaemonProcess, private_redis: RedisServer
) -> None:
    """Redis unreachable (packets dropped, not refused) for 30 s while the scheduled backup runs:
    every probe round still starts within 1.5 probe intervals of the previous one."""
    lab.set("redis", "url", f'"{private_redis.url}"')
    lab.set("backup", "schedule", "true")
    lab.set("backup", "time_of_day", "00:00:00")  # due at once: no backup taken today yet
    rule = ["INPUT", "-p", "tcp", "--dport", str(private_redis.port), "-j", "DROP"]
    daemon.start().wait_healthy()
    subprocess.run(["iptables", "-I", *rule], check=True)
    stamps: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stamp = _round_stamp(daemon)
            if stamp is not None and (not stamps or stamp != stamps[-1]):
                stamps.append(stamp)
            time.sleep(0.05)
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    backup = daemon.wait_event(lambda e: e.get("event") == "backup", 60, "the scheduled backup")
    assert backup["status"] == "ok", backup
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) > 20 and max(gaps) <= 1.5 * lab.config.cluster.probe_interval, gaps


def test_a_switchover_whose_promotion_fails_leaves_the_old_primary_serving(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    # ALTER SYSTEM on node2 (the first step of its promotion) now fails: a directory sits
    # where PostgreSQL writes its temporary postgresql.auto.conf.
    blocker = config.node("node2").data_dir / "postgresql.auto.conf.tmp"
    blocker.mkdir()
    writer = Writer(config).start()
    try:
        time.sleep(0.5)
        code, body = daemon.post("/switchover")
    finally:
        blocker.rmdir()
    assert code == 500 and "node1 is the primary again" in body["message"], body
    wait_for(
        lambda: streaming_standbys(config, "node1").get("node2") is not None,
        timeout=20,
        what="node2 streaming from node1 again",
    )
    back = time.monotonic()
    wait_for(
        lambda: writer.first_commit_on("node1", back) is not None,
        timeout=10,
        what="the writer committing on node1 again",
    )
    writer.stop()
    assert is_writable(config, "node1") is True and is_writable(config, "node2") is False
    assert writer.missing_on("node1") == []
    failed = daemon.wait_event(lambda e: e.get("event") == "operation_failed", 5, "failure")
    assert failed["operation"] == "switchover"


def test_a_full_state_disk_holds_the_failover_until_it_can_be_recorded(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """Persist before acting, on a full disk: the primary killed while the state directory (a
    small tmpfs) is full. No promotion while the failover cannot be written down; once there is
    room, it happens, and nothing acknowledged is lost."""
    config = lab.config
    state = config.state.dir
    state.mkdir(parents=True, exist_ok=True)
    kept = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    try:
        for name, data in kept.items():
            (state / name).write_bytes(data)
        daemon.start().wait_healthy()
        writer = Writer(config).start()
        time.sleep(1.0)
        filler = state / "filler"
        with filler.open("wb", buffering=0) as out, pytest.raises(OSError):  # ENOSPC
            while True:
                out.write(bytes(1 << 16))
        kill9(config.node("node1"))
        daemon.wait_event(
            lambda e: e.get("event") == "actions_skipped" and "promote" in e.get("actions", []),
            20,
            "the promotion skipped for want of a state file",
        )
        time.sleep(2.0)
        assert daemon.named("failover") == [] and is_writable(config, "node2") is False
        freed = time.monotonic()
        filler.unlink()
        daemon.wait_event(lambda e: e.get("event") == "failover", 20, "failover once recorded")
        wait_for(lambda: is_writable(config, "node2") is True, 20, what="node2 promoted")
        print(f"room made to node2 writable: {time.monotonic() - freed:.2f} s")
        time.sleep(1.0)
        writer.stop()
        assert writer.missing_on("node2") == []
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        daemon.stop()
        subprocess.run(["umount", "-l", str(state)], check=False)


def _moment(lab: Lab, moment: str) -> Callable[[], bool]:
    """When to kill the daemon during a switchover."""
    config = lab.config
    if moment == "old primary stopped":
        return lambda: procs.live_postmaster(config.node("node1").data_dir) is None
    if moment == "new primary promoted":
        return lambda: is_writable(config, "node2") is True
    started = time.monotonic()
    return lambda: time.monotonic() - started > 0.05  # during the first checkpoint


@pytest.mark.parametrize("moment", ["at once", "old primary stopped", "new primary promoted"])
def test_the_daemon_killed_during_a_switchover_leaves_one_primary_and_every_commit(
    lab: Lab, daemon: DaemonProcess, moment: str
) -> None:
    """kill -9 of the daemon at a moment of a switchover, then a new daemon: one primary, the
    other streaming from it, never both writable, nothing acknowledged lost."""
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    both_writable = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            if is_writable(config, "node1") and is_writable(config, "node2"):
                both_writable.append(time.monotonic())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    reached = _moment(lab, moment)
    caller = threading.Thread(target=lambda: _quietly(daemon.post, "/switchover"), daemon=True)
    caller.start()
    wait_for(reached, 30, interval=0.005, what=moment)
    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait()
    caller.join(30)
    daemon.start()

    def settled() -> bool:
        roles = {name: is_writable(config, name) for name in ("node1", "node2")}
        primaries = [name for name, writable in roles.items() if writable]
        if len(primaries) != 1:
            return False
        standby = config.other(primaries[0]).name
        return streaming_standbys(config, primaries[0]).get(standby) is not None

    try:
        wait_for(settled, 60, what="one primary and its standby streaming again")
        time.sleep(1.0)
        writer.stop()
    finally:
        watching.set()
        watcher.join()
    primary = "node1" if is_writable(config, "node1") else "node2"
    codes = [e.get("code") for e in daemon.events() if e.get("event") == "decision"]
    print(f"killed with the {moment}: {primary} is the primary; {codes}")
    assert both_writable == []
    assert writer.missing_on(primary) == []


def _quietly(call: Callable[[str], object], path: str) -> None:
    with contextlib.suppress(OSError, httpx.HTTPError):  # the daemon is killed while it answers
        call(path)


def test_a_copy_left_running_by_a_killed_daemon_does_not_hold_up_the_standby(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """What a daemon killed while it copied a lost standby leaves behind: pg_basebackup (in its
    own session) still writing into the standby's directory, here throttled to 32 kB/s so it
    would run for an hour. The next daemon must not wait for it, start a half copy, or copy
    over it: it stops it and copies afresh."""
    config = lab.config
    with connect(config, "node1") as conn:
        conn.execute("CREATE TABLE kept AS SELECT generate_series(1, 1000) AS v")
    node2 = config.local_node("node2")
    kill9(config.node("node2"))
    lose_data_dir(node2.data_dir)
    primary = config.node("node1")
    owner = runas.owner_of(node2.data_dir.parent)
    leftover = subprocess.Popen(
        [
            *runas.prefix_for(owner),
            str(pgbin.find_bin_dir(config.pg_bin) / "pg_basebackup"),
            "-D",
            str(node2.data_dir),
            "-d",
            replication_conninfo(
                primary, config.auth, clone_application_name("node2"), with_password=False
            ),
            "--max-rate=32k",
        ],
        env={**os.environ, "PGPASSWORD": config.auth.replication_password},
        start_new_session=True,
    )
    try:
        wait_for((node2.data_dir / "PG_VERSION").exists, 30, what="the copy under way")
        daemon.start()
        wait_for(
            lambda: streaming_standbys(config, "node1").get("node2") is not None,
            60,
            what="node2 copied afresh and streaming",
        )
        assert leftover.wait(timeout=10) != 0  # stopped, not finished
    finally:
        leftover.kill()
        leftover.wait()
    with connect(config, "node2") as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (1000,)
