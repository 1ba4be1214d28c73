"""Faults that combine on three namespace hosts with agents: an agent restarted while its host is
cut off, a cut shorter than the threshold but longer than the self-fence, the daemon away while
the standby's server is stopped cleanly, a primary refusing the daemon while its standby's host
is cut from it. Counts lost commits and moments with two primaries."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from typing import Any

import pytest

from pghad.agent.service import local_config
from pghad.lab.hosts import _STARTED, start_agent
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin, procs
from tests.support.chaos import (
    Writer,
    freeze,
    is_writable,
    streaming_standbys,
    thaw,
    wait_for,
)

from ..conftest import DaemonProcess, Lab
from .test_compound import Roles
from .test_hosts import (
    THRESHOLD,
    agent_events,
    at,
    drop,
    fence_timings,
    fenced_before,
    hosts,
    link,
    ns,
    running,
    start_daemon,
)

__all__ = ["hosts", "running"]  # fixtures used by name below

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None, reason="namespaces need root and ip"
    ),
]


def _kill_agent(lab: Lab, node: str) -> dict[str, Any]:
    """kill -9 of `node`'s agent (it cannot fence); returns lab.json's contents."""
    marker = json.loads((lab.dir / "lab.json").read_text())
    pid = int(marker["agents"][node])
    os.kill(pid, signal.SIGKILL)
    started = _STARTED.pop(pid, None)
    if started is not None:
        started.wait(10)
    return dict(marker)


def _start_agent(lab: Lab, net: dict[str, Any], marker: dict[str, Any], node: str) -> None:
    marker["agents"][node] = start_agent(lab.dir, net, node)
    (lab.dir / "lab.json").write_text(json.dumps(marker, indent=2))


def _restart_agent(lab: Lab, net: dict[str, Any], node: str) -> None:
    _start_agent(lab, net, _kill_agent(lab, node), node)


def test_an_agent_restarted_while_its_host_is_cut_off_fences_before_the_promotion(
    hosts: tuple[Lab, dict[str, Any]],
) -> None:
    """node1's host is cut off and its agent restarted there at once. The new agent has heard
    no one: it fences on the silence that began before it started. Before: it never fenced, its
    server stayed writable beside the promoted standby."""
    lab, net = hosts
    lab.set("cluster", "failover_threshold", "4.0")  # the agent fences at 3 s
    daemon = start_daemon(lab, net)
    try:
        config = lab.config
        writer = Writer(config).start()
        time.sleep(1.5)
        cut = time.monotonic()
        link(net, "node1", up=False)
        _restart_agent(lab, net, "node1")
        failover = daemon.wait_event(lambda e: e.get("event") == "failover", 30, "failover")
        time.sleep(1.0)
        fenced = [e for e in agent_events(lab, "node1", "self_fenced") if at(e) > at(failover)]
        before = [e for e in agent_events(lab, "node1", "self_fenced") if at(e) <= at(failover)]
        assert before, f"node1's restarted agent did not fence before the promotion: {fenced}"
        link(net, "node1", up=True)
        with Roles(lab).watching() as roles:
            daemon.wait_event(lambda e: e.get("action") == "rejoin" and e.get("ok"), 40, "rejoin")
            wait_for(lambda: is_writable(config, "node1") is False, 20, what="node1 a standby")
        writer.stop()
        assert roles.both == []
        assert [c for c in writer.acked if c.node == "node1" and c.at > cut + 0.1] == []
        assert writer.missing_on("node2") == []
    finally:
        link(net, "node1", up=True)
        daemon.stop()


def test_a_cut_shorter_than_the_threshold_ends_without_a_failover(
    hosts: tuple[Lab, dict[str, Any]],
) -> None:
    """Threshold 6 s, self-fence 2 s, node1's host cut for 3.5 s: its agent fences (it cannot
    know the cut is short), and once it answers again the daemon starts it again as the primary:
    no promotion happened, so none is needed. Before: the standby was promoted after the heal."""
    lab, net = hosts
    lab.set("cluster", "failover_threshold", "6.0")
    lab.set("agent", "self_fence_after", "2.0")
    daemon = start_daemon(lab, net)
    try:
        config = lab.config
        writer = Writer(config).start()
        time.sleep(1.5)
        link(net, "node1", up=False)
        time.sleep(3.5)
        link(net, "node1", up=True)
        with Roles(lab).watching() as roles:
            wait_for(lambda: is_writable(config, "node1") is True, 20, what="node1 writable")
            time.sleep(8.0)  # past the threshold after the heal
        writer.stop()
        assert agent_events(lab, "node1", "self_fenced"), "the cut did not reach the self-fence"
        assert daemon.named("failover") == []
        assert daemon.decisions("restarting_primary")
        assert roles.both == []
        assert is_writable(config, "node2") is False
        assert writer.missing_on("node1") == []
    finally:
        link(net, "node1", up=True)
        daemon.stop()


def test_a_primary_is_not_fenced_by_the_daemons_absence_while_its_standbys_host_answers(
    running: tuple[Lab, dict[str, Any], Any],
) -> None:
    """The daemon stopped (maintenance) and the standby's server stopped cleanly: node1 hears
    neither, but node2's agent answers and still reaches node1. Before: node1 fenced itself and
    the cluster had no primary until the daemon came back."""
    lab, net, daemon = running
    config = lab.config
    fence_after = 1.5  # 0.75 x the 2 s threshold
    daemon.stop()
    node2 = local_config(config.node("node2"))
    driver = LocalDriver(node2, config.auth, pgbin.find_bin_dir(config.pg_bin))
    asyncio.run(driver.stop("fast"))
    time.sleep(4 * fence_after)
    assert agent_events(lab, "node1", "self_fenced") == []
    assert is_writable(config, "node1") is True
    back = start_daemon(lab, net)  # starts node2 again as node1's standby
    try:
        wait_for(
            lambda: streaming_standbys(config, "node1").get("node2") is not None,
            30,
            what="node2 streaming again",
        )
    finally:
        back.stop()


def test_a_daemon_restarted_with_a_lowered_threshold_waits_for_the_cut_off_agents_timing(
    hosts: tuple[Lab, dict[str, Any]],
) -> None:
    """The agents confirmed 9 s (threshold 12 s); node1's host is cut off, the daemon killed
    and started again as a new process with the threshold lowered to 2 s. What node1's agent
    confirmed is in the daemon's state file, so the promotion still waits for it to fence.
    Before: a process-wide memory, lost with the process, and the standby promoted at 2 s."""
    lab, net = hosts
    lab.set("cluster", "failover_threshold", "12.0")
    daemon = start_daemon(lab, net)
    restarted = None
    try:
        config = lab.config
        wait_for(lambda: fence_timings(lab) == [9.0, 9.0], 10, what="both agents on 9 s")
        time.sleep(1.5)  # a round persists what they confirmed
        writer = Writer(config).start()
        time.sleep(1.0)
        link(net, "node1", up=False)
        daemon.kill9()
        lab.set("cluster", "failover_threshold", "2.0")
        restarted = DaemonProcess(lab).start(prefix=["ip", "netns", "exec", ns(net, "witness")])
        failover = restarted.wait_event(lambda e: e.get("event") == "failover", 40, "failover")
        time.sleep(1.0)
        writer.stop()
        fenced_before(lab, "node1", failover)
        assert writer.missing_on("node2") == []
    finally:
        link(net, "node1", up=True)
        daemon.stop()
        if restarted is not None:
            restarted.stop()


def test_an_old_primary_thawed_while_the_daemon_is_cut_off_fences_itself(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    """node1 frozen with its agent down, so nothing can stop it; node2 promoted. The daemon's
    host is then cut off, node1 thaws (writable on the old timeline) and its agent starts again:
    it sees node2 a primary on a newer timeline and stops node1. Before: it heard node2, so it
    never fenced, and node1 took commits (cancelled synchronous waits) beside the new primary."""
    lab, net, daemon = running
    config = lab.config
    marker = _kill_agent(lab, "node1")
    pids = freeze(config.node("node1"))
    try:
        daemon.wait_event(lambda e: e.get("event") == "failover", 30, "failover")
        link(net, "witness", up=False)
    finally:
        thaw(pids)
    try:
        _start_agent(lab, net, marker, "node1")
        wait_for(
            lambda: any(
                "newer timeline" in str(e.get("reason"))
                for e in agent_events(lab, "node1", "self_fenced")
            ),
            20,
            what="node1's agent fencing it",
        )
        assert is_writable(config, "node1") is None  # stopped
        assert is_writable(config, "node2") is True
    finally:
        link(net, "witness", up=True)
    daemon.wait_event(lambda e: e.get("action") == "rejoin" and e.get("ok"), 60, "rejoin")


def test_an_old_primary_that_returns_alone_unfenced_is_fenced_not_taken_as_the_primary(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    """node1 frozen with its agent down (nothing can stop it, its server state unknown), node2
    promoted without waiting for that fence, and it takes commits. node2's host is then cut off
    (its agent fences it) and node1 thaws, writable on the old timeline, alone. It lacks node2's
    commits: it is fenced (stale_primary_fence), never relaxed, never made the primary, and node2
    is never rewound under it. Before: node1 was taken as the primary, relaxed after
    sync_relax_after, acknowledged commits alone, and node2's commits were rewound away."""
    lab, net, daemon = running
    config = lab.config
    marker = _kill_agent(lab, "node1")
    writer = Writer(config).start()
    pids = freeze(config.node("node1"))
    thawed = None
    try:
        daemon.wait_event(lambda e: e.get("event") == "failover", 30, "failover")
        wait_for(lambda: is_writable(config, "node2") is True, 10, what="node2 writable")
        time.sleep(2.0)  # node2 acknowledges commits node1 never sees
        link(net, "node2", up=False)
        wait_for(lambda: agent_events(lab, "node2", "self_fenced") != [], 15, what="node2 fencing")
    finally:
        thaw(pids)
        thawed = time.monotonic()
    try:
        with Roles(lab).watching() as roles:
            time.sleep(10.0)  # past sync_relax_after and the threshold: nothing may relax node1
            assert [c for c in writer.acked if c.node == "node1" and c.at > thawed] == []
            assert daemon.decisions("primary_changed") == []
            assert daemon.decisions("stale_primary_fence")
            link(net, "node2", up=True)
            _start_agent(lab, net, marker, "node1")
            wait_for(lambda: is_writable(config, "node2") is True, 60, what="node2 back")
            daemon.wait_event(
                lambda e: e.get("action") == "rejoin" and e.get("ok"), 60, "node1 rejoined"
            )
        writer.stop()
        assert roles.both == []
        assert [c for c in writer.acked if c.node == "node1" and c.at > thawed] == []
        assert writer.missing_on("node2") == []
    finally:
        writer.stop()
        link(net, "node2", up=True)


def _reject_from(lab: Lab, net: dict[str, Any], node: str, host: str, reject: bool) -> None:
    """Make `node`'s pg_hba.conf reject pghad's user connecting from `host` (or allow it again)."""
    config = lab.config.node(node)
    hba = config.data_dir / "pg_hba.conf"
    line = f"host all {config.user} {net['hosts'][host]['address']}/32 reject\n"
    text = hba.read_text().replace(line, "")
    hba.write_text(line + text if reject else text)
    os.kill(procs.postmaster_pid(config.data_dir) or 0, signal.SIGHUP)


def test_a_primary_refusing_the_daemon_while_cut_from_its_standbys_host_is_not_failed_over(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    """node1's pg_hba.conf rejects pghad's user from the daemon's host, and node2's host loses
    node1: both witnesses lose node1's server. Its agent still answers the daemon's heartbeats
    that its own check of node1 answers as a writable primary: node1 is alive, so no failover
    (`primary_running`) and no fence. Before: node2 was promoted beside the running node1."""
    lab, net, daemon = running
    config = lab.config
    _reject_from(lab, net, "node1", "witness", reject=True)
    drop(net, "node2", "node1")
    try:
        daemon.wait_event(lambda e: e.get("code") == "primary_down", 10, "primary_down")
        time.sleep(4 * THRESHOLD + 2.0)  # past the threshold, and node2's witness past it too
        assert daemon.named("failover") == []
        assert daemon.decisions("primary_running"), "node1's agent's word was not asked"
        assert agent_events(lab, "node1", "self_fenced") == []
        assert is_writable(config, "node1") is True
        assert is_writable(config, "node2") is False
    finally:
        subprocess.run(["ip", "netns", "exec", ns(net, "node2"), "iptables", "-F"], check=False)
        _reject_from(lab, net, "node1", "witness", reject=False)
    refused_at = daemon.decisions("primary_running")[0]["timestamp"]
    daemon.wait_event(
        lambda e: e.get("code") == "healthy" and e["timestamp"] > refused_at, 40, "healthy again"
    )
