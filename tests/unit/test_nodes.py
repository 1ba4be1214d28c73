"""Node-specific settings and process facts (pure or /proc-only logic)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from pghad.agent.guard import superseded_by_peer
from pghad.config.model import LocalNodeConfig
from pghad.decide.observation import format_lsn, parse_lsn
from pghad.nodes import nodeconf
from pghad.nodes.conninfo import redacted
from pghad.system import procs


def test_node_conf_keeps_port_socket_and_primary_conninfo() -> None:
    node = LocalNodeConfig(name="n1", port=6000, data_dir=Path("/d"), socket_dir=Path("/s"))
    text = nodeconf.render(node, "host=h port=1 application_name=n1 password='it''s'")
    assert "port = 6000" in text
    assert "unix_socket_directories = '/s'" in text
    assert "primary_conninfo = 'host=h port=1 application_name=n1 password=''it''''s'''" in text
    assert "primary_conninfo" not in nodeconf.render(node, None)


def test_include_is_appended_once(tmp_path: Path) -> None:
    conf = tmp_path / "postgresql.conf"
    conf.write_text("shared_buffers = 1MB\n")
    assert nodeconf.ensure_include(conf)
    assert not nodeconf.ensure_include(conf)
    assert conf.read_text().count(nodeconf.INCLUDE_LINE) == 1


def test_auto_conf_loses_primary_conninfo_only(tmp_path: Path) -> None:
    auto = tmp_path / "postgresql.auto.conf"
    auto.write_text("primary_conninfo = 'host=x'\nsynchronous_standby_names = 'b'\n")
    assert nodeconf.strip_node_owned(auto)
    assert auto.read_text() == "synchronous_standby_names = 'b'\n"


def test_lsn_round_trip() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn(None) is None


def test_redacted_hides_password() -> None:
    assert "secret" not in redacted("host=h password=secret user=u")


def _fake_postmaster(data_dir: Path) -> subprocess.Popen[bytes]:
    """A process that looks like data_dir's postmaster: named postgres, working in data_dir."""
    binary = data_dir / "postgres"
    shutil.copy("/bin/sleep", binary)
    return subprocess.Popen([str(binary), "30"], cwd=data_dir)


def test_zombie_counts_as_dead_and_stale_pidfile_is_cleared(tmp_path: Path) -> None:
    child = _fake_postmaster(tmp_path)
    (tmp_path / "postmaster.pid").write_text(f"{child.pid}\n{tmp_path}\n")
    assert procs.live_postmaster(tmp_path) == child.pid
    assert not procs.clear_stale_pidfile(tmp_path)
    os.kill(child.pid, 9)
    deadline = time.monotonic() + 5
    while procs.process_state(child.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procs.process_state(child.pid) == "Z"
    assert procs.live_postmaster(tmp_path) is None
    assert procs.clear_stale_pidfile(tmp_path)
    assert not (tmp_path / "postmaster.pid").exists()
    child.wait()


def test_a_planted_pid_is_never_taken_for_the_postmaster(tmp_path: Path) -> None:
    """postmaster.pid is the PostgreSQL user's file: naming another process must not make
    pghad signal it (fence) or think the server runs."""
    bystander = subprocess.Popen(["sleep", "30"])  # root's process, elsewhere
    try:
        (tmp_path / "postmaster.pid").write_text(f"{bystander.pid}\n{tmp_path}\n")
        assert procs.live_postmaster(tmp_path) is None
        assert procs.kill_all_in(tmp_path) == 0
        assert procs.is_alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait()


def test_stale_socket_lock_is_cleared_only_when_its_owner_is_dead(tmp_path: Path) -> None:
    lock = tmp_path / ".s.PGSQL.7000.lock"
    lock.write_text(f"{os.getpid()}\n")
    assert not procs.clear_stale_socket_lock(tmp_path, 7000)
    lock.write_text("999999999\n")
    assert procs.clear_stale_socket_lock(tmp_path, 7000)
    assert not lock.exists()


def test_cancelled_command_leaves_no_process_behind(tmp_path: Path) -> None:
    import asyncio

    from pghad.system.commands import run_command

    marker = tmp_path / "still-running"

    async def cancel_soon() -> None:
        task = asyncio.create_task(
            run_command(["bash", "-c", f"sleep 1; touch {marker}"], timeout=60)
        )
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return
        raise AssertionError("the command was not cancelled")

    asyncio.run(cancel_soon())
    time.sleep(1.5)
    assert not marker.exists()


def test_an_agent_fences_a_primary_whose_peer_is_a_primary_on_a_newer_timeline() -> None:
    primary_tl1 = {"in_recovery": False, "timeline": 1}
    primary_tl2 = {"in_recovery": False, "timeline": 2}
    standby = {"in_recovery": True, "timeline": None}
    assert superseded_by_peer(primary_tl1, primary_tl2)
    assert not superseded_by_peer(primary_tl2, primary_tl1)  # the newer one keeps serving
    assert not superseded_by_peer(primary_tl1, primary_tl1)  # one timeline: the daemon decides
    assert not superseded_by_peer(primary_tl1, standby)
    assert not superseded_by_peer(primary_tl1, None)
