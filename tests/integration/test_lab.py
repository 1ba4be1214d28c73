"""`pghad lab`: a real primary and streaming standby, idempotent up, down/up keeps data, destroy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from pghad.decide.observation import format_lsn
from pghad.lab.local import lab_destroy, lab_down, lab_status, lab_up
from pghad.nodes.docker import checkpoint_location
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin, procs
from tests.support.chaos import connect, wait_for

from ..conftest import Lab


def _pids(lab: Lab) -> dict[str, int | None]:
    return {n.name: procs.live_postmaster(n.data_dir) for n in lab.config.nodes}


def test_standby_streams_and_sees_rows_within_a_second(lab: Lab) -> None:
    config = lab.config
    with connect(config, "node1") as primary:
        rows = primary.execute("SELECT application_name, state FROM pg_stat_replication").fetchall()
        assert rows == [("node2", "streaming")]
        primary.execute("CREATE TABLE lab_probe (v text)")
        primary.execute("INSERT INTO lab_probe VALUES ('hello')")
        written = time.monotonic()

    def visible() -> bool:
        with connect(config, "node2") as standby:
            try:
                return standby.execute("SELECT v FROM lab_probe").fetchall() == [("hello",)]
            except psycopg.errors.UndefinedTable:
                return False

    wait_for(visible, timeout=1.0, interval=0.02, what="the row on the standby")
    assert time.monotonic() - written < 1.0


def test_replication_needs_a_password(lab: Lab) -> None:
    hba = (lab.config.nodes[0].data_dir / "pg_hba.conf").read_text()
    replication_lines = [
        ln for ln in hba.splitlines() if ln.startswith("host") and "replication" in ln
    ]
    assert replication_lines and all(ln.split()[-1] == "scram-sha-256" for ln in replication_lines)
    assert all("127.0.0.1/32" in ln for ln in hba.splitlines() if ln.startswith("host"))


def test_up_again_is_a_noop(lab: Lab) -> None:
    before = _pids(lab)
    config_before = lab.config_path.read_text()
    lab_up(lab.dir)
    assert _pids(lab) == before
    assert lab.config_path.read_text() == config_before


def test_down_then_up_keeps_data(lab: Lab) -> None:
    with connect(lab.config, "node1") as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    lab_down(lab.dir)
    assert all(not s.running for s in lab_status(lab.dir))
    lab_up(lab.dir)
    assert all(s.running for s in lab_status(lab.dir))
    with connect(lab.config, "node1") as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [(42,)]
    wait_for(lambda: _standby_has_kept(lab), timeout=5, what="the standby to have the row")


def _standby_has_kept(lab: Lab) -> bool:
    with connect(lab.config, "node2") as conn:
        return conn.execute("SELECT count(*) FROM kept").fetchone() == (1,)


def test_node_port_survives_rewind_copying_the_other_config(lab: Lab) -> None:
    node2 = lab.config.node("node2")
    # pg_rewind and pg_basebackup copy the source's files: the node file must be rewritten.
    conf = (node2.data_dir / "pghad.node.conf").read_text()
    assert f"port = {node2.port}" in conf
    assert "application_name=node2" in conf


def test_destroy_leaves_nothing(work_root: Path) -> None:
    from ..conftest import make_lab

    made = make_lab(work_root, "destroy-me")
    data_dirs = [n.data_dir for n in made.config.nodes]
    lab_destroy(made.dir)
    assert not made.dir.exists()
    assert all(not procs.processes_in(d) for d in data_dirs)


def test_cli_lab_status_and_missing_lab(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pghad", "lab", "status", "--dir", str(tmp_path / "nothing")],
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 3
    assert "holds no lab" in result.stderr


def test_pg_control_is_read_as_pg_controldata_reads_it(lab: Lab) -> None:
    """The docker driver reads the checkpoint location from pg_control's bytes itself."""
    config = lab.config
    driver = LocalDriver(config.local_node("node1"), config.auth, pgbin.find_bin_dir(config.pg_bin))
    asyncio.run(driver.stop("fast"))
    expected = asyncio.run(driver.checkpoint_lsn())
    control = (driver.data_dir / "global" / "pg_control").read_bytes()
    assert format_lsn(checkpoint_location(control)) == expected
