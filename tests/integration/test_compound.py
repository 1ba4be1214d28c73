"""Faults that combine, on a real lab: a switchover the daemon dies in while the new primary
freezes, a copy that takes long while the standby is gone, a primary that refuses pghad alone.
Each counts acknowledged commits lost and moments with two writable primaries."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pghad.system import procs
from tests.support.chaos import (
    Writer,
    freeze,
    is_writable,
    kill9,
    lose_data_dir,
    streaming_standbys,
    thaw,
    wait_for,
)

from ..conftest import DaemonProcess, Lab
from .test_safety import _quietly

pytestmark = pytest.mark.integration


class Roles:
    """Samples who is writable every 50 ms: moments with two writable primaries, and when each
    node was seen writable."""

    def __init__(self, lab: Lab, nodes: tuple[str, ...] = ("node1", "node2")) -> None:
        self.config = lab.config
        self.nodes = list(nodes)
        self.both: list[float] = []
        self.writable: dict[str, list[float]] = {name: [] for name in nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            seen = [name for name in self.nodes if is_writable(self.config, name)]
            for name in seen:
                self.writable[name].append(now)
            if len(seen) == 2:
                self.both.append(now)
            time.sleep(0.05)

    @contextlib.contextmanager
    def watching(self) -> Iterator[Roles]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def test_a_switchover_the_daemon_dies_in_then_a_frozen_new_primary_never_revives_the_old(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """The switchover promotes node2; the daemon is killed before a round records it; node2
    then freezes past the threshold. The restarted daemon must not start node1 again as a
    primary (it may have been superseded): no primary until node2 is back, then node1 rejoins.
    Before: node1 was started on the old timeline and acknowledged commits lost at the heal."""
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    caller = threading.Thread(target=lambda: _quietly(daemon.post, "/switchover"), daemon=True)
    caller.start()
    wait_for(lambda: is_writable(config, "node2") is True, 30, interval=0.005, what="promotion")
    daemon.kill9()
    frozen = freeze(config.node("node2"))
    frozen_at = time.monotonic()
    restarted = DaemonProcess(lab)
    try:
        with Roles(lab, ("node1",)).watching() as node1_roles:
            restarted.start()
            time.sleep(3 * config.cluster.failover_threshold + 2.0)
        thaw(frozen)
        frozen = []

        def settled() -> bool:
            return (
                is_writable(config, "node2") is True
                and streaming_standbys(config, "node2").get("node1") is not None
            )

        with Roles(lab).watching() as roles:
            wait_for(settled, 60, what="node2 the primary, node1 streaming from it")
            time.sleep(1.0)
        writer.stop()
    finally:
        thaw(frozen)
        caller.join(5)
        restarted.stop()
    codes = {e.get("code") for e in restarted.events() if e.get("event") == "decision"}
    print(f"decisions while node2 was frozen: {sorted(c for c in codes if c)}")
    assert node1_roles.writable["node1"] == [], "node1 was started as a primary"
    assert roles.both == []
    assert "primary_superseded" in codes
    lost = writer.missing_on("node2")
    assert lost == [], f"{len(lost)} acknowledged commits lost"
    assert [c for c in writer.acked if c.node == "node1" and c.at > frozen_at] == []


def test_a_standby_copied_afresh_never_holds_the_primarys_writes_past_sync_relax_after(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """The standby's data directory is lost and its copy is slow (pg_basebackup held for 8 s):
    the relax of synchronous replication runs beside the copy. Before: the primary's writes
    waited for the whole copy."""
    config = lab.config
    node2_dir = config.local_node("node2").data_dir
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    lost = kill9(config.node("node2"))
    lose_data_dir(node2_dir)
    wait_for(lambda: procs.writers_into(node2_dir) != [], 30, interval=0.01, what="the copy")
    copy = procs.writers_into(node2_dir)
    for pid in copy:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(8.0)  # within wal_sender_timeout (10 s): the copy resumes afterwards
        gap = writer.longest_gap(lost - 1.0, time.monotonic())
        first = writer.first_commit_on("node1", lost + config.cluster.sync_relax_after)
    finally:
        # runuser, which runs the copy as the data owner, stops itself when its child stops.
        for pid in [*copy, *(_parent(pid) for pid in copy)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    print(f"writes stalled {gap:.2f} s while the standby was copied afresh")
    assert first is not None, "no commit while the copy ran"
    assert gap < config.cluster.sync_relax_after + 2.5
    wait_for(
        lambda: streaming_standbys(config, "node1").get("node2") is not None,
        60,
        what="node2 copied and streaming",
    )
    writer.stop()
    assert writer.missing_on("node1") == []
    assert daemon.named("failover") == []


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _hba_reject(lab: Lab, node: str, reject: bool) -> None:
    """Refuse (or allow again) pghad's own TCP connections to `node`; replication is untouched."""
    hba = lab.config.local_node(node).data_dir / "pg_hba.conf"
    user = lab.config.node(node).user
    line = f"host all {user} 127.0.0.1/32 reject\n"
    text = hba.read_text().replace(line, "")
    hba.write_text(line + text if reject else text)
    os.kill(procs.postmaster_pid(lab.config.local_node(node).data_dir) or 0, signal.SIGHUP)


def _running_over_socket(lab: Lab, node: str) -> bool:
    local = lab.config.local_node(node)
    conninfo = f"host={local.socket_dir} port={local.port} user={local.user} dbname=postgres"
    with psycopg.connect(conninfo, connect_timeout=2) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return row == (False,)


def test_a_primary_refusing_pghads_connections_on_an_idle_cluster_is_not_failed_over(
    lab: Lab, daemon: DaemonProcess
) -> None:
    """No agents; node1's pg_hba.conf rejects pghad's user while node2 streams on an idle
    cluster. The local driver says node1 runs: it is alive, so no failover and no fence.
    Before: the receiver's message age passed the 2 s guard and node1 was shut down."""
    config = lab.config
    daemon.start().wait_healthy()
    _hba_reject(lab, "node1", reject=True)
    try:
        daemon.wait_event(lambda e: e.get("code") == "primary_down", 10, "primary_down")
        time.sleep(15.0)  # past the receiver's keepalive cycle (wal_sender_timeout / 2) twice
        assert daemon.named("failover") == []
        assert daemon.decisions("primary_running"), "the driver's word was not asked"
        assert _running_over_socket(lab, "node1")
        assert is_writable(config, "node2") is False
    finally:
        _hba_reject(lab, "node1", reject=False)
    daemon.wait_event(
        lambda e: (
            e.get("code") == "healthy"
            and e["timestamp"] > daemon.decisions("primary_running")[0]["timestamp"]
        ),
        20,
        "healthy again",
    )
