"""Automatic failover on the real lab: no acknowledged commit lost, never two primaries."""

from __future__ import annotations

import asyncio
import signal
import time

from pghad.nodes.base import Role
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin
from tests.support.chaos import (
    Writer,
    connect,
    freeze,
    is_writable,
    kill9,
    streaming_standbys,
    thaw,
    wait_for,
)

from ..conftest import DaemonProcess, Lab


def _driver(lab: Lab, name: str) -> LocalDriver:
    config = lab.config
    return LocalDriver(config.local_node(name), config.auth, pgbin.find_bin_dir(config.pg_bin))


def test_kill9_of_primary_promotes_standby_without_losing_commits(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    killed_at = kill9(config.node("node1"))
    wait_for(
        lambda: writer.first_commit_on("node2", killed_at) is not None,
        timeout=15,
        what="a commit on node2",
    )
    time.sleep(0.5)
    writer.stop()
    assert len(writer.acked) > 50
    assert writer.missing_on("node2") == []
    assert len(daemon.named("failover")) == 1
    # The old primary comes back as a standby of the new one (auto_rejoin).
    wait_for(
        lambda: "node1" in streaming_standbys(config, "node2"),
        timeout=30,
        what="node1 streaming from node2",
    )
    wait_for(lambda: is_writable(config, "node1") is False, timeout=10, what="node1 read-only")


def test_frozen_primary_is_failed_over_and_never_writable_again(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    frozen = freeze(config.node("node1"))
    frozen_at = time.monotonic()
    try:
        wait_for(
            lambda: writer.first_commit_on("node2", frozen_at) is not None,
            timeout=20,
            what="a commit on node2",
        )
    finally:
        thaw(frozen)
    time.sleep(0.5)
    writer.stop()
    assert writer.missing_on("node2") == []
    assert is_writable(config, "node1") is not True
    wait_for(
        lambda: "node1" in streaming_standbys(config, "node2"),
        timeout=30,
        what="node1 streaming from node2",
    )
    wait_for(lambda: is_writable(config, "node1") is False, timeout=10, what="node1 read-only")
    assert is_writable(config, "node2") is True


def test_outage_shorter_than_threshold_does_not_fail_over(lab: Lab, daemon: DaemonProcess) -> None:
    lab.set("cluster", "failover_threshold", "5.0")
    config = lab.config
    daemon.start().wait_healthy()
    node1 = _driver(lab, "node1")
    asyncio.run(node1.stop("immediate"))
    time.sleep(1.5)
    asyncio.run(node1.start(Role.PRIMARY))
    daemon.wait_event(lambda e: e.get("code") == "primary_down", 5, "primary_down decision")
    time.sleep(6)
    assert daemon.named("failover") == []
    assert is_writable(config, "node1") is True
    assert is_writable(config, "node2") is False


def test_standby_outage_relaxes_sync_and_recovers(lab: Lab, daemon: DaemonProcess) -> None:
    lab.set("cluster", "auto_rejoin", "false")  # the standby stays down until the test starts it
    config = lab.config
    daemon.start().wait_healthy()
    node2 = _driver(lab, "node2")
    asyncio.run(node2.stop())
    stopped_at = time.monotonic()
    writer = Writer(config).start()
    daemon.wait_event(lambda e: e.get("code") == "relaxing_sync", 15, "relaxing_sync decision")
    wait_for(
        lambda: writer.first_commit_on("node1", stopped_at + 0.1) is not None,
        timeout=10,
        what="commits on the primary with the standby down",
    )
    asyncio.run(node2.start(Role.STANDBY, config.node("node1")))
    wait_for(
        lambda: streaming_standbys(config, "node1").get("node2") == "sync",
        timeout=20,
        what="node2 synchronous again",
    )
    writer.stop()
    assert writer.missing_on("node1") == []
    relaxed_at = daemon.decisions("relaxing_sync")[0]["timestamp"]
    daemon.wait_event(
        lambda e: e.get("code") == "healthy" and e["timestamp"] > relaxed_at,
        10,
        "healthy (eligible again) after the standby caught up",
    )


def test_a_frozen_standby_holds_writes_only_until_sync_relax_after(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """The relax clock starts when the standby stops flushing, not after wal_sender_timeout."""
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    frozen_at = time.monotonic()
    pids = freeze(config.node("node2"))
    try:
        daemon.wait_event(lambda e: e.get("code") == "relaxing_sync", 20, "relaxing_sync")
        wait_for(
            lambda: writer.first_commit_on("node1", frozen_at + 0.5) is not None,
            timeout=10,
            what="commits with the standby frozen",
        )
        time.sleep(1.0)
        gap = writer.longest_gap(frozen_at - 1.0, time.monotonic())
        print(f"writes stalled {gap:.2f} s with the standby frozen")
        relax_after = config.cluster.sync_relax_after
        assert gap < relax_after + 2.5  # wal_sender_timeout is 10 s: 14 s before this change
    finally:
        thaw(pids)
    writer.stop()
    assert writer.missing_on("node1") == []


def test_ineligible_standby_is_not_promoted_and_the_log_says_why(
    lab: Lab, daemon: DaemonProcess
) -> None:
    lab.set("cluster", "auto_rejoin", "false")  # the standby stays down until the test starts it
    config = lab.config
    daemon.start().wait_healthy()
    node2 = _driver(lab, "node2")
    asyncio.run(node2.stop())
    daemon.wait_event(lambda e: e.get("code") == "relaxing_sync", 15, "relaxing_sync decision")
    with connect(config, "node1") as conn:  # commits the stopped standby does not have
        conn.execute("CREATE TABLE after_relax (v int)")
        conn.execute("INSERT INTO after_relax SELECT generate_series(1, 20)")
    kill9(config.node("node1"))
    asyncio.run(node2.start(Role.STANDBY, config.node("node1")))
    refusal = daemon.wait_event(
        lambda e: e.get("code") == "standby_ineligible", 15, "standby_ineligible decision"
    )
    assert refusal["actions"] == [] and refusal["primary"] == "node1"
    assert refusal["state"] == "primary_down" and refusal["down_for_s"] >= refusal["threshold_s"]
    time.sleep(3)
    assert daemon.named("failover") == []
    assert is_writable(config, "node2") is False


def test_a_killed_primary_whose_standby_may_not_take_over_is_started_again(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """The standby frozen past sync_relax_after (ineligible and unreachable), then the primary
    killed: nothing may be promoted, so pghad starts the primary again. Nothing lost, no second
    primary, and the standby streams again once it thaws."""
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    pids = freeze(config.node("node2"))
    try:
        daemon.wait_event(lambda e: e.get("code") == "relaxing_sync", 20, "relaxing_sync")
        time.sleep(1.0)  # commits only node1 has
        killed = kill9(config.node("node1"))
        restart = daemon.wait_event(
            lambda e: e.get("code") == "restarting_primary", 30, "restarting_primary decision"
        )
        wait_for(lambda: is_writable(config, "node1") is True, 30, what="node1 writable again")
        print(f"kill to node1 writable again: {time.monotonic() - killed:.2f} s")
        assert restart["actions"] == ["start_primary"] and restart["primary"] == "node1"
        time.sleep(1.0)
        writer.stop()
        assert writer.first_commit_on("node1", killed) is not None
    finally:
        thaw(pids)
    assert daemon.named("failover") == []
    assert writer.missing_on("node1") == []
    wait_for(
        lambda: streaming_standbys(config, "node1").get("node2") is not None,
        30,
        what="node2 streaming again",
    )
    assert is_writable(config, "node2") is False


def test_daemon_killed_while_primary_down_fails_over_once(lab: Lab, daemon: DaemonProcess) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    time.sleep(0.5)
    daemon.kill9()
    kill9(config.node("node1"))
    time.sleep(1.0)
    restarted = DaemonProcess(lab).start()
    try:
        restarted.wait_event(lambda e: e.get("event") == "failover", 20, "failover")
        wait_for(
            lambda: "node1" in streaming_standbys(config, "node2"),
            timeout=30,
            what="node1 streaming from node2",
        )
        time.sleep(2)
        assert len(restarted.named("failover")) == 1
        assert [is_writable(config, "node1"), is_writable(config, "node2")] == [False, True]
    finally:
        restarted.stop()


def test_sigterm_stops_the_daemon_within_seconds(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.process is not None
    assert daemon.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_a_former_primary_started_writable_again_is_fenced_at_once(
    lab: Lab, daemon: DaemonProcess
) -> None:
    lab.set("cluster", "auto_rejoin", "false")
    config = lab.config
    daemon.start().wait_healthy()
    kill9(config.node("node1"))
    daemon.wait_event(lambda e: e.get("event") == "failover", 15, "failover")
    # An operator (or a reboot) starts the old primary as it was: writable, on the old timeline.
    asyncio.run(_driver(lab, "node1").start(Role.PRIMARY))
    fence = daemon.wait_event(lambda e: e.get("code") == "split_brain_fence", 10, "fencing")
    assert fence["fence"] == "node1" and fence["keep"] == "node2"
    wait_for(lambda: is_writable(config, "node1") is not True, timeout=5, what="node1 fenced")
    assert is_writable(config, "node2") is True
