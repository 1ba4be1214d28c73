"""The control API over HTTP on the real lab: failover, switchover, failback, refusals."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

from pghad.nodes.base import Role
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin
from tests.support.chaos import Writer, is_writable, kill9, streaming_standbys, wait_for

from ..conftest import DaemonProcess, Lab


def _roles(lab: Lab) -> list[bool | None]:
    config = lab.config
    return [is_writable(config, n.name) for n in config.nodes]


def _eligible(daemon: DaemonProcess, primary: str) -> bool:
    _, status = daemon.http("GET", "/status")
    return bool(status["primary"] == primary and status["standby_eligible"])


def _timelines(daemon: DaemonProcess) -> dict[str, object]:
    _, status = daemon.http("GET", "/status")
    return {n["name"]: n.get("timeline") for n in status["nodes"]}


def test_index_lists_commands_with_curl_lines(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    code, body = daemon.http("GET", "/")
    assert code == 200
    paths = {c["path"] for c in body["commands"]}
    assert {"/status", "/failover", "/switchover", "/failback", "/metrics"} <= paths
    failover = next(c for c in body["commands"] if c["path"] == "/failover")
    assert failover["curl"].startswith('curl -X POST -H "Authorization: Bearer $PGHAD_API_TOKEN"')
    assert lab.config.api.token not in str(body)


def test_status_shows_both_nodes(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    code, status = daemon.http("GET", "/status")
    assert code == 200
    assert status["primary"] == "node1" and status["preferred_primary"] == "node1"
    roles = {n["name"]: (n["role"], n["sync_state"]) for n in status["nodes"]}
    assert roles == {"node1": ("primary", None), "node2": ("standby", "sync")}
    assert lab.config.auth.password not in str(status)


def test_failover_of_a_healthy_primary_loses_nothing(lab: Lab, daemon: DaemonProcess) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    time.sleep(1.0)
    code, body = daemon.post("/failover")
    time.sleep(0.5)
    writer.stop()
    assert code == 200, body
    assert body["status"] == "success" and body["new_primary"] == "node2"
    assert writer.missing_on("node2") == []
    assert writer.first_commit_on("node2", 0) is not None
    wait_for(
        lambda: "node1" in streaming_standbys(config, "node2"), timeout=20, what="node1 streaming"
    )


def test_failback_after_kill9_three_rounds_keeps_every_commit(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    writer = Writer(config).start()
    try:
        for _round in range(3):
            wait_for(
                lambda: _eligible(daemon, primary="node1"),
                timeout=30,
                what="node2 an eligible synchronous standby of node1",
            )
            killed_at = kill9(config.node("node1"))
            wait_for(
                lambda: writer.first_commit_on("node2", killed_at) is not None,  # noqa: B023
                timeout=20,
                what="commits on node2",
            )
            wait_for(
                lambda: "node1" in streaming_standbys(config, "node2"),
                timeout=30,
                what="node1 rejoined",
            )
            code, body = daemon.post("/failback")
            assert code == 200, body
            assert body["new_primary"] == "node1"
            assert _roles(lab) == [True, False]
    finally:
        time.sleep(0.3)
        writer.stop()
    assert writer.missing_on("node1") == []
    assert {c.node for c in writer.acked} == {"node1", "node2"}


def test_failback_while_original_node_is_down_is_refused(lab: Lab, daemon: DaemonProcess) -> None:
    lab.set("cluster", "auto_rejoin", "false")
    config = lab.config
    daemon.start().wait_healthy()
    kill9(config.node("node1"))
    daemon.wait_event(lambda e: e.get("event") == "failover", 15, "failover")
    time.sleep(1.5)
    before = _timelines(daemon)
    code, body = daemon.post("/failback")
    assert code == 409
    assert body["status"] == "error"
    assert "node1 is down" in body["message"] and "retry" in body["message"]
    assert _roles(lab) == [None, True]
    assert _timelines(daemon) == before


def test_second_operation_gets_409_naming_the_running_one(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    barrier = threading.Barrier(4)
    results: list[tuple[int, object]] = []

    def call() -> None:
        barrier.wait()
        results.append(daemon.post("/switchover"))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    codes = sorted(code for code, _ in results)
    assert codes == [200, 409, 409, 409]
    refusals = [body for code, body in results if code == 409]
    assert all("switchover is running" in str(b["message"]) for b in refusals)  # type: ignore[index]


def test_missing_or_wrong_token_is_refused_and_changes_nothing(
    lab: Lab, daemon: DaemonProcess
) -> None:
    daemon.start().wait_healthy()
    for token in (None, "wrong"):
        for path in ("/failover", "/switchover", "/failback"):
            code, body = daemon.http("POST", path, token=token)
            assert code == 401, (path, body)
            assert "Bearer" in body["message"]
    time.sleep(1)
    assert _roles(lab) == [True, False]


def test_unknown_paths_and_bad_parameters(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    assert daemon.http("GET", "/nowhere")[0] == 404
    code, body = daemon.http("GET", "/events?limit=abc")
    assert code == 422 and "limit" in body["message"]
    assert daemon.http("GET", "/events?limit=0")[0] == 422
    token = lab.config.api.token
    assert daemon.http("POST", "/failover?force=maybe", token=token)[0] == 422
    assert daemon.http("GET", "/failover")[0] == 405
    assert _roles(lab) == [True, False]


def test_events_show_decisions_with_reasons(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    code, body = daemon.http("GET", "/events?limit=5")
    assert code == 200 and 1 <= len(body["events"]) <= 5
    assert any(e["event"] == "decision" and e["reason"] for e in body["events"])


def test_trigger_file_runs_a_failback(lab: Lab, daemon: DaemonProcess) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    kill9(config.node("node1"))
    wait_for(
        lambda: "node1" in streaming_standbys(config, "node2"), timeout=30, what="node1 rejoined"
    )
    trigger = config.state.trigger_path
    trigger.write_text("")
    finished = daemon.wait_event(
        lambda e: e.get("event") == "operation_finished" and e.get("operation") == "failback",
        30,
        "failback finished",
    )
    assert finished["new_primary"] == "node1"
    assert not trigger.exists()
    assert daemon.wait_event(lambda e: e.get("event") == "failback_trigger", 1, "trigger event")
    assert _roles(lab) == [True, False]


def test_cli_status_and_failback_refusal(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    status = subprocess.run(
        [sys.executable, "-m", "pghad", "status", "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0
    assert "node1" in status.stdout and "primary" in status.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "pghad", "failback", "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1
    assert "node1 is already the primary" in refused.stderr


def test_backups_over_the_api(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    code, body = daemon.post("/backups?kind=full")
    assert code == 200, body
    assert body["backup"]["kind"] == "completo" and body["backup"]["status"] == "ok"
    code, listing = daemon.http("GET", "/backups")
    assert code == 200 and [b["id"] for b in listing["backups"]] == [body["backup"]["id"]]
    code, second = daemon.post("/backups")
    assert code == 200 and second["backup"]["kind"] == "incremental", second["backup"]["reason"]
    assert daemon.post("/backups?kind=weekly")[0] == 422
    assert daemon.http("POST", "/backups", token="wrong")[0] == 401
    _, metrics = daemon.http("GET", "/metrics")
    assert 'pghad_backup_last_size_bytes{kind="completo"}' in metrics


def test_failover_of_an_ineligible_standby_needs_force(lab: Lab, daemon: DaemonProcess) -> None:
    lab.set("cluster", "failover_threshold", "60.0")  # keep the automatic failover out of it
    lab.set("cluster", "auto_rejoin", "false")  # the standby stays down until the test starts it
    config = lab.config
    daemon.start().wait_healthy()
    node2 = LocalDriver(config.local_node("node2"), config.auth, pgbin.find_bin_dir(config.pg_bin))
    asyncio.run(node2.stop())
    daemon.wait_event(lambda e: e.get("code") == "relaxing_sync", 15, "relaxing_sync")
    kill9(config.node("node1"))
    asyncio.run(node2.start(Role.STANDBY, config.node("node1")))
    time.sleep(1.5)
    code, body = daemon.post("/failover")
    assert code == 409 and "force=true" in body["message"]
    assert _roles(lab) == [None, False]
    code, body = daemon.post("/failover?force=true")
    assert code == 200, body
    assert body["new_primary"] == "node2" and body["forced"] is True
    assert is_writable(config, "node2") is True


def test_non_loopback_api_without_token_refuses_to_start(lab: Lab) -> None:
    lab.set("api", "bind", '"0.0.0.0"')
    lab.set("api", "token", '""')
    result = subprocess.run(
        [sys.executable, "-m", "pghad", "run", "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2  # a config mistake, named with its file
    assert "api.token is empty" in result.stderr and str(lab.config_path) in result.stderr


def test_paused_a_killed_primary_is_not_failed_over_and_resumed_it_is(
    lab: Lab, daemon: DaemonProcess
) -> None:
    config = lab.config
    daemon.start().wait_healthy()
    code, body = daemon.post("/pause")
    assert code == 200 and body["paused"] is True
    assert daemon.http("GET", "/status")[1]["paused"] is True
    kill9(config.node("node1"))
    daemon.wait_event(lambda e: e.get("code") == "paused", 10, "the paused decision")
    time.sleep(2.5)  # past the 2 s threshold
    assert _roles(lab) == [None, False]
    resumed = subprocess.run(
        [sys.executable, "-m", "pghad", "resume", "--config", str(lab.config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
    wait_for(lambda: is_writable(config, "node2") is True, timeout=10, what="failover on resume")
