"""The operator's day on the real lab: pghad check, and a CLI that says where it looked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from pghad.nodes.local import LocalDriver
from pghad.system import pgbin
from tests.support.chaos import connect, wait_for

from ..conftest import REPO, DaemonProcess, Lab


def pghad(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env_free = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "pghad", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
        env=env_free,
    )


def _checks(lab: Lab) -> tuple[int, dict[str, dict[str, str]]]:
    result = pghad("check", "--json", "--config", str(lab.config_path))
    return result.returncode, {c["name"]: c for c in json.loads(result.stdout)}


def test_check_is_ok_on_a_healthy_lab_and_fails_naming_a_stopped_standby(
    lab: Lab, daemon: DaemonProcess
) -> None:
    lab.set("cluster", "auto_rejoin", "false")
    daemon.start().wait_healthy()
    assert daemon.post("/backups?kind=full")[0] == 200
    time.sleep(1.0)
    code, checks = _checks(lab)
    assert code == 0, checks
    assert checks["replication"]["level"] == "ok"
    config = lab.config
    node2 = LocalDriver(config.local_node("node2"), config.auth, pgbin.find_bin_dir(config.pg_bin))
    asyncio.run(node2.stop())
    code, checks = _checks(lab)
    assert code == 2
    assert checks["node node2"]["level"] == "fail"
    assert "node2 is not streaming" in checks["replication"]["detail"]
    printed = pghad("check", "--config", str(lab.config_path))
    assert printed.returncode == 2 and "FAIL  node node2: unreachable" in printed.stdout


def test_check_warns_about_replay_lag(lab: Lab, daemon: DaemonProcess) -> None:
    lab.set("cluster", "lag_alert_s", "1.0")
    daemon.start().wait_healthy()
    assert daemon.post("/backups?kind=full")[0] == 200
    config = lab.config
    with connect(config, "node1") as primary:
        primary.execute("CREATE TABLE lagging (v int)")  # a transaction the standby replays
    with connect(config, "node2") as standby:
        wait_for(
            lambda: standby.execute("SELECT to_regclass('lagging')").fetchone() != (None,),
            timeout=10,
            what="the table on the standby",
        )
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            with connect(config, "node1") as primary:
                primary.execute("INSERT INTO lagging VALUES (1)")
            time.sleep(2.0)
            code, checks = _checks(lab)
            alert = daemon.wait_event(lambda e: e.get("event") == "lag_alert", 10, "lag alert")
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
    assert code == 1 and checks["replay lag"]["level"] == "warn", checks
    assert alert["node"] == "node2"
    daemon.wait_event(lambda e: e.get("event") == "lag_alert_cleared", 10, "the alert cleared")


def test_commands_without_a_config_say_where_they_looked(tmp_path: Path) -> None:
    for argv in (("backups",), ("status",), ("switchover",)):
        result = pghad(*argv)  # in the repository, beside its example config.toml
        assert result.returncode == 2, result
        assert "$PGHAD_CONFIG" in result.stderr and "/etc/pghad/config.toml" in result.stderr
    assert pghad("--version").stdout.startswith("pghad ")
