"""A stopped server's own evidence, on real PostgreSQL 18: pg_control read through the local
driver, and a daemon restarted with both servers stopped after a failover, whose state file is
older than the cluster. It starts the newer primary (pg_control: shut down on the newest
timeline), never the old one (killed on the old timeline), then rejoins the old one under it.
Counts acknowledged commits lost and moments with two writable primaries."""

from __future__ import annotations

import asyncio
import time

import pytest

from pghad.decide.observation import ControlData
from pghad.nodes.base import Role
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin
from tests.support.chaos import Writer, is_writable, kill9, streaming_standbys, wait_for

from ..conftest import DaemonProcess, Lab
from .test_compound import Roles

pytestmark = pytest.mark.integration


def _driver(lab: Lab, name: str) -> LocalDriver:
    config = lab.config
    return LocalDriver(config.local_node(name), config.auth, pgbin.find_bin_dir(config.pg_bin))


def _control(lab: Lab, name: str) -> ControlData:
    return asyncio.run(_driver(lab, name).control_data())


def test_pg_control_tells_a_stopped_standby_from_a_stopped_primary(lab: Lab) -> None:
    standby, primary = _driver(lab, "node2"), _driver(lab, "node1")
    asyncio.run(standby.stop())
    stopped = _control(lab, "node2")
    assert (stopped.state, stopped.timeline) == ("shut down in recovery", 1)
    assert stopped.was_standby and stopped.checkpoint_lsn is not None
    asyncio.run(standby.start(Role.STANDBY, lab.config.node("node1")))
    asyncio.run(primary.stop())
    assert _control(lab, "node1").state == "shut down" and _control(lab, "node1").was_primary


def test_a_daemon_restarted_with_both_servers_stopped_starts_the_newer_primary(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    state_file = config.state.dir / "state.json"
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    before_failover = state_file.read_text()  # a copy older than the cluster (primary: node1)
    kill9(config.node("node1"))
    wait_for(lambda: is_writable(config, "node2") is True, 30, interval=0.005, what="failover")
    daemon.kill9()  # before any round rejoins node1: it stays killed on timeline 1
    time.sleep(1.0)
    asyncio.run(_driver(lab, "node2").stop())  # the new primary, stopped cleanly
    assert _control(lab, "node1").state == "in production"  # killed as a primary, timeline 1
    assert _control(lab, "node2") == ControlData(
        "shut down", 2, _control(lab, "node2").checkpoint_lsn
    )
    state_file.write_text(before_failover)
    restarted = DaemonProcess(lab)
    try:
        with Roles(lab).watching() as roles:
            restarted.start()

            def settled() -> bool:
                return (
                    is_writable(config, "node2") is True
                    and streaming_standbys(config, "node2").get("node1") is not None
                )

            wait_for(settled, 90, what="node2 the primary, node1 streaming from it")
            time.sleep(1.0)
    finally:
        writer.stop()
        restarted.stop()
    codes = [e.get("code") for e in restarted.events() if e.get("event") == "decision"]
    print(f"decisions after the restart: {sorted({c for c in codes if c})}")
    assert "starting_newest_primary" in codes
    assert roles.writable["node1"] == [], "node1 was started as a primary"
    assert roles.both == []
    lost = writer.missing_on("node2")
    assert lost == [], f"{len(lost)} acknowledged commits lost"
