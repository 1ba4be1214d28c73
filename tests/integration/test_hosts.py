"""Two database hosts and the daemon's host as network namespaces: agents, two witnesses,
self-fencing and real partitions (links cut, packets dropped), under a continuous writer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pghad.lab.hosts import lab_up_hosts
from pghad.lab.local import lab_destroy
from pghad.system import procs
from tests.support.chaos import Writer, is_writable, kill9, log_events, wait_for
from tests.support.delay_proxy import DelayProxy
from tests.support.haproxy import primary_listener

from ..conftest import REPO, DaemonProcess, Lab, _next_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and ip"
)
THRESHOLD = 2.0


@pytest.fixture
def hosts(work_root: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Lab, dict[str, Any]]]:
    lab_dir = work_root / f"hosts-{request.node.name[:30]}"
    net = lab_up_hosts(lab_dir, _next_port())
    lab = Lab(lab_dir, lab_dir / "config.toml")
    lab.set("cluster", "failover_threshold", str(THRESHOLD))
    lab.set("backup", "schedule", "false")
    lab.set("redis", "url", '"redis://127.0.0.1:1/0"')  # nothing to reach from the daemon's host
    # The agents keep the lab's default 10 s threshold from their start: the daemon's heartbeats
    # give them its 2 s (test_agents_fence_on_the_daemons_timing_and_follow_its_reload).
    yield lab, net
    subprocess.run(["ip", "netns", "exec", ns(net, "witness"), "iptables", "-F"], check=False)
    lab_destroy(lab_dir)
    procs.reap_postgres_zombies()


@pytest.fixture
def running(
    hosts: tuple[Lab, dict[str, Any]],
) -> Iterator[tuple[Lab, dict[str, Any], DaemonProcess]]:
    """The hosts lab with the daemon running on the witness host (stopped afterwards)."""
    lab, net = hosts
    daemon = start_daemon(lab, net)
    try:
        yield lab, net, daemon
    finally:
        daemon.stop()


def failed_over_in_time(writer: Writer, killed: float, to: str = "node2") -> None:
    first = writer.first_commit_on(to, killed)
    assert first is not None and first - killed < THRESHOLD + 3.0
    print(f"kill to first commit on the new primary: {first - killed:.2f} s")
    assert writer.missing_on(to) == []


def ns(net: dict[str, Any], host: str) -> str:
    return str(net["hosts"][host]["netns"])


def link(net: dict[str, Any], host: str, up: bool) -> None:
    iface = net["hosts"][host]["interface"]
    subprocess.run(["ip", "link", "set", iface, "up" if up else "down"], check=True)


def drop(net: dict[str, Any], on: str, to: str, probability: float = 1.0) -> None:
    """Drop packets between host `on` and host `to`, inside `on` (all, or a random share)."""
    address = net["hosts"][to]["address"]
    share = ["-m", "statistic", "--mode", "random", "--probability", str(probability)]
    for chain, flag in (("OUTPUT", "-d"), ("INPUT", "-s")):
        subprocess.run(
            ["ip", "netns", "exec", ns(net, on), "iptables", "-A", chain, flag, address,
             *(share if probability < 1.0 else []), "-j", "DROP"],
            check=True,
        )  # fmt: skip


def start_daemon(lab: Lab, net: dict[str, Any]) -> DaemonProcess:
    daemon = DaemonProcess(lab)
    daemon.start(prefix=["ip", "netns", "exec", ns(net, "witness")])
    try:
        daemon.wait_healthy(30)
    except BaseException:
        daemon.stop()  # a daemon that never got healthy is not left running
        raise
    return daemon


def agent_events(lab: Lab, node: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in log_events(lab.dir / f"agent-{node}.log") if e.get("event") == kind]


def fence_timings(lab: Lab) -> list[float | None]:
    """The self-fence timing each agent last took from the daemon (None: none yet)."""
    timings = [agent_events(lab, node, "self_fence_timing") for node in ("node1", "node2")]
    return [float(events[-1]["self_fence_after"]) if events else None for events in timings]


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))


def fenced_before(lab: Lab, node: str, failover: dict[str, Any]) -> None:
    """`node`'s agent fenced its server before the failover event (never two primaries)."""
    fenced = agent_events(lab, node, "self_fenced")
    assert fenced, f"{node}'s agent did not fence its primary"
    assert at(fenced[0]) < at(failover), (fenced[0], failover)


def count(daemon: DaemonProcess, kind: str) -> int:
    return len(daemon.named(kind))


def test_kill_9_of_the_primary_fails_over_and_rejoins_over_the_network(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, _, daemon = running
    config = lab.config
    writer = Writer(config).start()
    time.sleep(1.5)
    killed = kill9(config.node("node1"))
    daemon.wait_event(lambda e: e.get("event") == "failover", 20, "failover")
    rejoined = daemon.wait_event(
        lambda e: e.get("action") == "rejoin" and e.get("ok"), 30, "rejoin"
    )
    time.sleep(1.0)
    writer.stop()
    assert rejoined["method"] == "pg_rewind"  # through node1's agent, from node2 over the net
    failed_over_in_time(writer, killed)
    wait_for(lambda: writer.missing_on("node1") == [], 20, what="node1 to catch up")
    assert writer.missing_on("node2") == []


def test_agents_fence_on_the_daemons_timing_and_follow_its_reload(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, _, daemon = running

    assert agent_events(lab, "node1", "agent_started"), "the agents' log holds no start"
    wait_for(lambda: fence_timings(lab) == [1.5, 1.5], 10, what="both agents on 0.75 x 2 s")
    lab.set("cluster", "failover_threshold", "4.0")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event(lambda e: e.get("event") == "config_reloaded", 10, "reload")
    wait_for(lambda: fence_timings(lab) == [3.0, 3.0], 10, what="both agents on 0.75 x 4 s")


def test_a_threshold_lowered_while_the_primary_is_cut_off_waits_for_its_agent_to_fence(
    hosts: tuple[Lab, dict[str, Any]],
) -> None:
    """The primary's agent confirmed 9 s (threshold 12 s); its host is cut off and at once the
    threshold is lowered to 2 s and reloaded. That agent cannot learn it: the promotion waits
    until it has fenced, so there are never two primaries."""
    lab, net = hosts
    lab.set("cluster", "failover_threshold", "12.0")
    daemon = start_daemon(lab, net)
    try:
        config = lab.config
        wait_for(lambda: fence_timings(lab) == [9.0, 9.0], 10, what="both agents on 9 s")
        writer = Writer(config).start()
        time.sleep(1.5)
        link(net, "node1", up=False)
        lab.set("cluster", "failover_threshold", str(THRESHOLD))
        daemon.signal(signal.SIGHUP)
        failover = daemon.wait_event(lambda e: e.get("event") == "failover", 30, "failover")
        time.sleep(1.0)
        writer.stop()
        fenced_before(lab, "node1", failover)
        assert writer.missing_on("node2") == []
        link(net, "node1", up=True)
        daemon.wait_event(lambda e: e.get("action") == "rejoin" and e.get("ok"), 40, "rejoin")
    finally:
        link(net, "node1", up=True)
        daemon.stop()


def test_the_primary_host_cut_off_fences_itself_the_standby_takes_over_nothing_lost(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, net, daemon = running
    try:
        config = lab.config
        writer = Writer(config).start()
        time.sleep(1.5)
        cut = time.monotonic()
        link(net, "node1", up=False)
        failover = daemon.wait_event(lambda e: e.get("event") == "failover", 30, "failover")
        assert failover["to"] == "node2"
        time.sleep(2.0)
        writer.stop()
        fenced_before(lab, "node1", failover)  # never two primaries
        after_cut = [c for c in writer.acked if c.node == "node1" and c.at > cut + 0.1]
        assert after_cut == []  # nothing acknowledged by the old primary once cut off
        assert writer.missing_on("node2") == []
        link(net, "node1", up=True)
        daemon.wait_event(lambda e: e.get("action") == "rejoin" and e.get("ok"), 40, "rejoin")
        wait_for(lambda: is_writable(config, "node1") is False, 20, what="node1 a standby")
    finally:
        link(net, "node1", up=True)


def test_the_daemon_cut_from_the_primary_alone_never_fails_over(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, net, daemon = running
    config = lab.config
    drop(net, on="witness", to="node1")  # idle primary, standby still connected
    hold = float(os.environ.get("PGHAD_CUT_SECONDS", "8"))  # each phase: idle, then writing
    time.sleep(hold)
    writer = Writer(config).start()
    time.sleep(hold)
    writer.stop()
    assert count(daemon, "failover") == 0
    assert daemon.decisions("primary_alive_for_standby"), "the second witness was not asked"
    assert is_writable(config, "node1") is True
    assert agent_events(lab, "node1", "self_fenced") == []
    assert len(writer.acked) > 50 and writer.missing_on("node1") == []


def test_the_daemon_host_cut_off_changes_nothing_and_no_storm_follows(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, net, daemon = running
    try:
        config = lab.config
        writer = Writer(config).start()
        actions_before = count(daemon, "action")
        link(net, "witness", up=False)
        time.sleep(float(os.environ.get("PGHAD_WITNESS_CUT_SECONDS", "15")))
        link(net, "witness", up=True)
        daemon.wait_healthy(30)
        time.sleep(3)
        writer.stop()
        assert count(daemon, "failover") == 0
        for node in ("node1", "node2"):
            assert agent_events(lab, node, "self_fenced") == []
        assert count(daemon, "action") - actions_before <= 2  # a sync relax/restore at most
        assert writer.missing_on("node1") == []
    finally:
        link(net, "witness", up=True)


def test_thirty_percent_loss_between_daemon_and_primary_causes_no_failover(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, net, daemon = running
    seconds = float(os.environ.get("PGHAD_LOSS_SECONDS", "20"))
    config = lab.config
    writer = Writer(config).start()
    drop(net, on="witness", to="node1", probability=0.3)
    time.sleep(seconds)
    subprocess.run(["ip", "netns", "exec", ns(net, "witness"), "iptables", "-F"], check=True)
    assert count(daemon, "failover") == 0
    killed = kill9(config.node("node1"))  # a real failure right after is still handled
    daemon.wait_event(lambda e: e.get("event") == "failover", 20, "failover")
    time.sleep(1.0)
    writer.stop()
    failed_over_in_time(writer, killed)


def test_a_second_daemon_for_the_same_agents_refuses_to_start(
    running: tuple[Lab, dict[str, Any], DaemonProcess], tmp_path: Path
) -> None:
    lab, _, _ = running
    other = tmp_path / "other.toml"
    text = lab.config_path.read_text().replace(str(lab.dir / "state"), str(tmp_path))
    other.write_text(text.replace('bind = "10.', 'bind = "127.0.0.1" # 10.'))
    result = subprocess.run(
        [sys.executable, "-m", "pghad", "run", "--config", str(other)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert result.returncode != 0
    assert "holds" in result.stderr or "another pghad" in result.stderr, result.stderr


def haproxy_writer(config: Any, port: int, stop: Any, acked: list[float]) -> None:
    """Commit through HAProxy's one address, reconnecting at once after an error."""
    node = config.node("node1")
    conninfo = (
        f"host=127.0.0.1 port={port} user={node.user} dbname={node.dbname} "
        f"password={config.auth.password} connect_timeout=1"
    )
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS through_haproxy (at float8)")
                while not stop.is_set():
                    conn.execute("INSERT INTO through_haproxy VALUES (%s)", (time.monotonic(),))
                    acked.append(time.monotonic())
                    time.sleep(0.01)
        except psycopg.Error:
            time.sleep(0.05)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_a_writer_through_haproxy_on_the_agents_primary_check_resumes_after_a_kill(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, _, daemon = running
    config = lab.config
    port = _next_port()
    servers = [
        f"server {n.name} {n.host}:{n.port} check port {config.agent.port}" for n in config.nodes
    ]
    checks = "inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions"
    (lab.dir / "haproxy.cfg").write_text(primary_listener(port, checks, servers))
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(lab.dir / "haproxy.cfg")])
    stop, acked = threading.Event(), list[float]()
    writer = threading.Thread(target=haproxy_writer, args=(config, port, stop, acked))
    try:
        writer.start()
        wait_for(lambda: len(acked) > 20, 15, what="commits through haproxy")
        killed = kill9(config.node("node1"))
        daemon.wait_event(lambda e: e.get("event") == "failover", 20, "failover")
        wait_for(lambda: any(t > killed for t in acked), 15, what="commits after the kill")
        resumed = next(t for t in acked if t > killed) - killed
        print(f"writes through haproxy resumed {resumed:.2f} s after the kill")
        assert resumed < THRESHOLD + 3.0
    finally:
        stop.set()
        writer.join(timeout=10)
        haproxy.terminate()
        haproxy.wait(timeout=10)


def test_half_a_second_of_delay_each_way_to_the_primary_causes_no_failover(
    hosts: tuple[Lab, dict[str, Any]],
) -> None:
    lab, net = hosts
    config = lab.config
    node1 = config.node("node1")
    proxy = DelayProxy((net["gateway"], _next_port()), (node1.host, node1.port)).start()
    # The daemon reaches node1 through the proxy; the standby and the writer do not.
    daemon_config = lab.dir / "config-daemon.toml"
    text = lab.config_path.read_text()
    text = text.replace(f'host = "{node1.host}"\nport = {node1.port}',
                        f'host = "{proxy.listen[0]}"\nport = {proxy.listen[1]}')  # fmt: skip
    assert proxy.listen[0] in text
    daemon_config.write_text(text)
    daemon_lab = Lab(lab.dir, daemon_config)
    seconds = float(os.environ.get("PGHAD_DELAY_SECONDS", "20"))
    daemon = start_daemon(daemon_lab, net)
    try:
        writer = Writer(config).start()
        proxy.delay_s = 0.5
        time.sleep(seconds)
        proxy.delay_s = 0.0
        assert count(daemon, "failover") == 0
        time.sleep(2)
        killed = kill9(node1)
        daemon.wait_event(lambda e: e.get("event") == "failover", 20, "failover")
        time.sleep(1.0)
        writer.stop()
        failed_over_in_time(writer, killed)
    finally:
        daemon.stop()
        proxy.stop()


def test_a_primary_cut_from_its_standby_holds_writes_only_until_sync_relax_after(
    running: tuple[Lab, dict[str, Any], DaemonProcess],
) -> None:
    lab, net, daemon = running
    try:
        config = lab.config
        writer = Writer(config).start()
        time.sleep(1.0)
        cut = time.monotonic()
        drop(net, on="node2", to="node1")  # the daemon still reaches both
        daemon.wait_event(lambda e: e.get("code") == "relaxing_sync", 20, "relaxing_sync")
        wait_for(lambda: writer.first_commit_on("node1", cut + 0.5) is not None, 10, what="writes")
        time.sleep(1.0)
        gap = writer.longest_gap(cut - 1.0, time.monotonic())
        print(f"writes stalled {gap:.2f} s with the primary cut from its standby")
        assert gap < config.cluster.sync_relax_after + 2.5  # not wal_sender_timeout's 10 s
        assert count(daemon, "failover") == 0
        subprocess.run(["ip", "netns", "exec", ns(net, "node2"), "iptables", "-F"], check=True)
        daemon.wait_event(
            lambda e: e.get("code") == "healthy" and e["timestamp"] > daemon.decisions(
                "relaxing_sync")[0]["timestamp"],
            40,
            "healthy again once the standby caught up",
        )  # fmt: skip
        writer.stop()
        assert writer.missing_on("node1") == [] and writer.missing_on("node2") == []
    finally:
        subprocess.run(["ip", "netns", "exec", ns(net, "node2"), "iptables", "-F"], check=False)


def check_levels(lab: Lab) -> tuple[int, dict[str, str]]:
    result = subprocess.run(
        [sys.executable, "-m", "pghad", "check", "--json", "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    return result.returncode, {c["name"]: c["level"] for c in json.loads(result.stdout)}


def test_check_reports_each_agent(running: tuple[Lab, dict[str, Any], DaemonProcess]) -> None:
    lab, net, _ = running
    _, levels = check_levels(lab)
    assert levels["agent node1"] == levels["agent node2"] == "ok", levels
    link(net, "node2", up=False)
    try:
        status, levels = check_levels(lab)
        assert levels["agent node2"] == "fail" and status == 2
    finally:
        link(net, "node2", up=True)
