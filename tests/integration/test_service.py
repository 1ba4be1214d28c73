"""Running as a service: metrics during a failover, SIGHUP reload, systemd notify, JSON logs."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families

from pghad.record.event_sink import STREAM
from tests.support.chaos import kill9, wait_for

from ..conftest import DaemonProcess, Lab, RedisServer


def scrape(daemon: DaemonProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = daemon.http("GET", "/metrics")
    assert code == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_show_the_failover_role_and_timeline_change(
    lab: Lab, daemon: DaemonProcess
) -> None:
    daemon.start().wait_healthy()
    before = scrape(daemon)
    assert value(before, "pghad_node_role", node="node1", role="primary") == 1
    assert value(before, "pghad_node_timeline", node="node2") == 1
    assert value(before, "pghad_failovers_total", cause="automatic") == 0
    assert value(before, "pghad_cluster_state", state="healthy") == 1
    kill9(lab.config.node("node1"))

    def promoted() -> bool:
        now = scrape(daemon)
        return value(now, "pghad_node_role", node="node2", role="primary") == 1

    wait_for(promoted, timeout=15, what="node2 primary in the metrics")
    after = scrape(daemon)
    assert value(after, "pghad_failovers_total", cause="automatic") == 1
    assert value(after, "pghad_node_timeline", node="node2") == 2
    assert value(after, "pghad_last_failover_duration_seconds") > 0
    assert value(after, "pghad_node_role", node="node1", role="primary") == 0
    assert value(after, "pghad_probe_duration_seconds_count", node="node2") > 0


def test_health_is_200_while_probing(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    code, body = daemon.http("GET", "/health")
    assert code == 200 and body["status"] == "success"


def test_sighup_applies_a_new_threshold_and_keeps_the_old_config_on_error(
    lab: Lab, daemon: DaemonProcess
) -> None:
    node1 = lab.config.node("node1")
    daemon.start().wait_healthy()
    lab.set("cluster", "failover_threshold", "3.5")
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_event(lambda e: e.get("event") == "config_reloaded", 10, "reload")
    assert reloaded["failover_threshold"] == 3.5
    lab.set("cluster", "failover_threshold", '"soon"')
    daemon.signal(signal.SIGHUP)
    failed = daemon.wait_event(lambda e: e.get("event") == "config_reload_failed", 10, "failure")
    assert "cluster.failover_threshold" in failed["error"]
    kill9(node1)
    decision = daemon.wait_event(lambda e: e.get("code") == "failover", 15, "failover")
    assert decision["threshold_s"] == 3.5
    assert decision["down_for_s"] >= 3.5


def test_sighup_reports_settings_that_need_a_restart(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    lab.set("api", "port", "1")
    daemon.signal(signal.SIGHUP)
    reloaded = daemon.wait_event(lambda e: e.get("event") == "config_reloaded", 10, "reload")
    assert reloaded["needs_restart"] == ["api.port"]
    assert daemon.http("GET", "/health")[0] == 200  # still on the old port


def test_systemd_notify_protocol(lab: Lab, daemon: DaemonProcess, work_root: Path) -> None:
    path = work_root / f"notify-{time.monotonic_ns()}.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(15)
    received: list[str] = []

    def expect(line: str) -> None:
        while not any(line in message.split("\n") for message in received):
            received.append(sock.recv(4096).decode())

    try:
        daemon.start({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        expect("READY=1")
        ready_at = len(received)
        deadline = time.monotonic() + 5
        while sum("WATCHDOG=1" in m for m in received[ready_at:]) < 3:
            assert time.monotonic() < deadline, "fewer than 3 watchdog pings in 5 s"
            received.append(sock.recv(4096).decode())
        daemon.signal(signal.SIGHUP)
        expect("RELOADING=1")
        reload_at = len(received)
        while not any("READY=1" in m for m in received[reload_at:]):
            received.append(sock.recv(4096).decode())
        daemon.signal(signal.SIGTERM)
        expect("STOPPING=1")
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in received)
    finally:
        sock.close()


def test_json_log_of_a_failover_has_reasons_durations_and_no_secret(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    kill9(config.node("node1"))
    daemon.wait_event(lambda e: e.get("event") == "failover", 15, "failover")
    daemon.wait_event(lambda e: e.get("action") == "rejoin" and "ok" in e, 30, "rejoin outcome")
    events = daemon.events()
    decision = next(e for e in events if e.get("code") == "failover")
    assert decision["actions"] == ["promote"] and decision["primary"] == "node1"
    assert decision["down_for_s"] >= decision["threshold_s"] and decision["level"] == "info"
    assert isinstance(decision["reason"], str)  # the sentence is there, whatever its words
    promote = next(e for e in events if e.get("event") == "action" and e["action"] == "promote")
    assert promote["ok"] is True and promote["duration_s"] > 0
    rejoin = next(e for e in events if e.get("event") == "action" and e["action"] == "rejoin")
    assert rejoin["duration_s"] > 0
    text = daemon.log_path.read_text()
    for secret in (config.auth.password, config.auth.replication_password, config.api.token):
        assert secret and secret not in text


def test_events_reach_the_redis_stream(
    lab: Lab, daemon: DaemonProcess, redis_server: RedisServer
) -> None:
    client = redis.Redis(port=redis_server.port)
    start = client.xlen(STREAM)
    daemon.start().wait_healthy()
    wait_for(lambda: client.xlen(STREAM) > start, timeout=10, what="events in the Redis stream")
    client.close()
