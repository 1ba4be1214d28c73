"""The daemon's loop, queue, procedures and executor on fake nodes: whole scenarios in ms."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pghad.act.procedures import OperationResult
from pghad.act.requests import Failover, Switchover
from pghad.api.client import format_status
from pghad.config.model import load_config
from pghad.daemon.app import Daemon
from pghad.decide.model import ClusterState, Memory
from pghad.errors import NodeError, OperationBusy
from pghad.testing import FakeClock, FakeCluster, FakeNode, fake_config_text


def make(
    tmp_path: Path, extra: str = "", cluster_lines: str = ""
) -> tuple[Daemon, FakeCluster, FakeClock]:
    path = tmp_path / "config.toml"
    path.write_text(fake_config_text(tmp_path, extra, cluster_lines))
    config = load_config(path)
    cluster = FakeCluster.of(config)
    clock = FakeClock()
    daemon = Daemon(config, path, node_factory=cluster.nodes_for, clock=clock)
    daemon.loop.intake.next_schedule_check = float("inf")  # no backup schedule in these scenarios
    return daemon, cluster, clock


async def settle(daemon: Daemon) -> None:
    """Let running requests finish (an operation writes its promotion intent in a thread)."""
    for _ in range(1000):
        running = [e.task for e in daemon.loop.ops.running.values() if e.task]
        if all(task.done() for task in running):
            return
        await asyncio.sleep(0.002)


async def rounds(daemon: Daemon, clock: FakeClock, count: int, step: float = 1.0) -> None:
    for _ in range(count):
        await daemon.loop.tick()
        await settle(daemon)
        clock.advance(step)


def after_failover(cluster: FakeCluster, daemon: Daemon) -> None:
    """b was promoted; a is the former primary."""
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    b.in_recovery, b.upstream, b.timeline, b.sync_names = False, None, 2, ""
    a.in_recovery, a.upstream, a.timeline = True, "b", 2
    daemon.loop.memory = Memory(
        state=ClusterState.FAILING_OVER, primary="b", needs_rejoin=frozenset({"a"})
    )


def test_a_node_pghad_cannot_observe_is_never_rejoined(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    after_failover(cluster, daemon)
    a = cluster.nodes["a"]
    a.reachable = a.observable = False  # streaming from b, but cut from pghad
    asyncio.run(rounds(daemon, clock, 30))
    assert a.calls == []
    assert daemon.loop.memory.needs_rejoin == frozenset()  # b sees it streaming


def test_a_node_streaming_from_the_primary_is_never_stopped(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    after_failover(cluster, daemon)
    cluster.nodes["a"].reachable = False  # its host answers, its SQL port does not
    asyncio.run(rounds(daemon, clock, 30))
    assert cluster.nodes["a"].calls == []


def test_a_rejoin_that_does_not_stick_backs_off(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    after_failover(cluster, daemon)
    a = cluster.nodes["a"]
    a.running = False
    cluster.cut_links.add(frozenset({"a", "b"}))  # every rejoin "works" but never streams
    a.reachable = False  # and pghad cannot see it as a standby either
    asyncio.run(rounds(daemon, clock, 30))
    rejoins = cluster.calls("a", "rewind") + cluster.calls("a", "clone")
    assert 1 <= rejoins <= 5, a.calls


def test_a_former_primary_that_is_down_is_rejoined_once(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    after_failover(cluster, daemon)
    cluster.nodes["a"].running = False
    asyncio.run(rounds(daemon, clock, 10))
    assert cluster.calls("a", "rewind") == 1
    assert cluster.nodes["a"].streaming_to(cluster.nodes["b"])
    assert daemon.loop.memory.state is ClusterState.HEALTHY


def test_a_crashed_standby_is_started_again(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    cluster.nodes["b"].running = False
    asyncio.run(rounds(daemon, clock, 3))
    assert cluster.nodes["b"].streaming_to(cluster.nodes["a"])
    assert cluster.calls("b", "clone") == 0


def test_a_standby_without_data_is_rebuilt_by_a_copy(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    b = cluster.nodes["b"]
    b.running, b.has_data = False, False
    asyncio.run(rounds(daemon, clock, 3))
    assert cluster.calls("b", "clone") == 1 and b.streaming_to(cluster.nodes["a"])


def test_a_rewound_server_that_does_not_start_is_copied_afresh(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    after_failover(cluster, daemon)
    a = cluster.nodes["a"]
    a.running, a.start_fails = False, True
    asyncio.run(rounds(daemon, clock, 3))
    assert cluster.calls("a", "rewind") == 1 and cluster.calls("a", "clone") == 1
    assert a.streaming_to(cluster.nodes["b"])


def test_sync_is_relaxed_only_after_the_state_file_says_ineligible(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    seen: list[bool] = []
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    original = a.set_synchronous

    async def checking(standby: str | None, archive: bool = False) -> None:
        state = json.loads((tmp_path / "state.json").read_text())
        seen.append(state["standby_eligible"])
        await original(standby, archive)

    a.set_synchronous = checking  # type: ignore[method-assign]
    asyncio.run(rounds(daemon, clock, 2))
    assert daemon.loop.memory.standby_eligible
    b.running = b.observable = False  # the standby is gone and pghad cannot tell why
    asyncio.run(rounds(daemon, clock, 6))
    assert a.sync_names == "" and seen == [False]


def test_one_operation_at_a_time_and_the_trigger_waits(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    trigger = tmp_path / "failback.trigger"

    async def scenario() -> None:
        await rounds(daemon, clock, 2)
        first = asyncio.ensure_future(daemon.submit(Switchover()))
        await asyncio.sleep(0)
        with pytest.raises(OperationBusy, match="switchover is running"):
            await daemon.submit(Switchover())
        trigger.touch()
        await daemon.loop.tick()  # starts the switchover; the trigger must wait
        assert trigger.exists()
        await settle(daemon)
        await daemon.loop.tick()  # collects it; the trigger is taken now
        result = await asyncio.wait_for(first, 5)
        assert isinstance(result, OperationResult) and result.new_primary == "b"
        await rounds(daemon, clock, 5)  # b's new standby is made synchronous, then the trigger
        assert not trigger.exists()

    asyncio.run(scenario())
    assert not cluster.nodes["a"].in_recovery  # failed back to the preferred node


def test_a_switchover_whose_promotion_fails_puts_the_old_primary_back(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)

    async def refuse(archive: bool = False) -> bool:
        raise NodeError("b: promotion refused")

    cluster.nodes["b"].promote = refuse  # type: ignore[method-assign]

    async def scenario() -> None:
        await rounds(daemon, clock, 2)
        pending = asyncio.ensure_future(daemon.submit(Switchover()))
        await rounds(daemon, clock, 2)
        with pytest.raises(NodeError, match="a is the primary again"):
            await asyncio.wait_for(pending, 5)

    asyncio.run(scenario())
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    assert a.running and not a.in_recovery and b.streaming_to(a)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "operation_failed" for e in events)


def test_reload_reaches_backups_and_node_passwords(tmp_path: Path) -> None:
    daemon, cluster, _clock = make(tmp_path)
    config_path = tmp_path / "config.toml"
    extra = (
        '\n[auth]\npassword = "changed"\n'
        "\n[backup]\nschedule = false\nkeep_cycles = 5\n"
        f'compression = "gzip"\nsource = "primary"\ndir = "{tmp_path / "backups"}"\n'
    )
    text = fake_config_text(tmp_path).replace(
        f'[backup]\nschedule = false\ndir = "{tmp_path / "backups"}"\n', ""
    )
    config_path.write_text(text + extra)
    asyncio.run(daemon._reload())
    runtime = daemon.loop.runtime
    backup = runtime.backups.config.backup
    assert (backup.keep_cycles, backup.compression, backup.source) == (5, "gzip", "primary")
    assert runtime.procedures.config is runtime.config
    assert cluster.nodes["a"].auth.password == "changed"


def states_at_promotion(node: FakeNode, state_dir: Path) -> list[dict[str, object]]:
    """What state.json held each time `node` was promoted."""
    states: list[dict[str, object]] = []
    original = node.promote

    async def checking(archive: bool = False) -> bool:
        states.append(json.loads((state_dir / "state.json").read_text()))
        return await original(archive)

    node.promote = checking  # type: ignore[method-assign]
    return states


def test_a_failover_decision_is_persisted_before_the_promotion(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    states = states_at_promotion(b, tmp_path)
    asyncio.run(rounds(daemon, clock, 2))
    a.running = False
    asyncio.run(rounds(daemon, clock, 30, step=0.1))
    assert len(states) == 1
    assert states[0]["state"] == "failing_over" and states[0]["standby_eligible"] is False
    assert states[0]["needs_rejoin"] == ["a"] and states[0]["promoting"] == "b"
    assert not b.in_recovery and a.streaming_to(b)


def test_asynchronous_mode_never_promotes_past_an_unfenced_primary(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path, cluster_lines="synchronous = false")
    asyncio.run(rounds(daemon, clock, 2))
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    a.reachable = a.observable = False  # gone from pghad's sight, maybe still taking writes
    b.upstream = None  # and the standby no longer hears from it
    asyncio.run(rounds(daemon, clock, 40, step=0.1))
    assert b.in_recovery and "promote" not in b.calls
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    refused = [e for e in events if e["event"] == "action" and e["action"] == "promote"]
    assert refused and not refused[0]["ok"] and "could not be fenced" in refused[0]["detail"]


def test_an_action_that_fails_unexpectedly_is_recorded_and_backs_off(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    b = cluster.nodes["b"]
    b.running = False

    async def broken(role: object, primary: object = None) -> None:
        b.calls.append("start")
        raise RuntimeError("a bug in a driver")

    b.start = broken  # type: ignore[method-assign]
    asyncio.run(rounds(daemon, clock, 12))
    assert 2 <= b.calls.count("start") <= 4
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "operation_failed"]
    assert failed and "RuntimeError: a bug in a driver" in failed[0]["error"]


def _events(tmp_path: Path) -> list[dict[str, object]]:
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_paused_nothing_is_done_automatically_until_resumed_even_after_a_restart(
    tmp_path: Path,
) -> None:
    daemon, cluster, clock = make(tmp_path)
    a, b = cluster.nodes["a"], cluster.nodes["b"]

    async def pause() -> None:
        await rounds(daemon, clock, 2)
        assert await daemon.set_paused(True)

    asyncio.run(pause())
    restarted = Daemon(
        daemon.config, tmp_path / "config.toml", node_factory=cluster.nodes_for, clock=clock
    )
    restarted.loop.intake.next_schedule_check = float("inf")
    assert restarted.loop.paused and restarted.status()["paused"]
    a.running = False
    asyncio.run(rounds(restarted, clock, 40, step=0.1))
    assert b.in_recovery and "promote" not in b.calls
    assert restarted.recorder.last_decision is not None
    assert restarted.recorder.last_decision.code == "paused"

    async def resume() -> None:
        assert await restarted.set_paused(False)
        await rounds(restarted, clock, 5, step=0.1)

    asyncio.run(resume())
    assert not b.in_recovery and a.streaming_to(b)


def test_a_hook_runs_with_the_role_change_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "hook.out"
    hook = f'\n[hooks]\ncommand = ["/bin/sh", "-c", "env | grep ^PGHAD_ | sort >> {out}"]\n'
    daemon, cluster, clock = make(tmp_path, extra=hook)
    asyncio.run(rounds(daemon, clock, 2))
    cluster.nodes["a"].running = False

    async def fail_over() -> None:
        await rounds(daemon, clock, 30, step=0.1)
        for _ in range(500):  # the hooks run as processes: a loaded machine is slow
            if out.exists() and out.read_text().count("PGHAD_EVENT") >= 2:
                break
            await asyncio.sleep(0.02)

    asyncio.run(fail_over())
    text = out.read_text()
    assert "PGHAD_EVENT=promote\nPGHAD_NODE=b\nPGHAD_ROLE=primary" in text.replace(
        "PGHAD_CLUSTER=pghad\n", ""
    )
    assert "PGHAD_EVENT=demote" in text and "PGHAD_NODE=a" in text
    hooks = [e for e in _events(tmp_path) if e["event"] == "hook"]
    assert hooks and all(e["returncode"] == 0 for e in hooks)


def test_the_lag_alert_is_raised_and_cleared(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    b = cluster.nodes["b"]
    asyncio.run(rounds(daemon, clock, 2))
    b.replay_lag_s = 7.5
    asyncio.run(rounds(daemon, clock, 2))
    assert daemon.status()["nodes"][1]["lag_alert"] is True
    metric = daemon.metrics.registry.get_sample_value("pghad_replication_lag_alert", {"node": "b"})
    assert metric == 1
    b.replay_lag_s = 0.2
    asyncio.run(rounds(daemon, clock, 2))
    kinds = [e["event"] for e in _events(tmp_path) if str(e["event"]).startswith("lag_alert")]
    assert kinds == ["lag_alert", "lag_alert_cleared"]
    assert daemon.status()["nodes"][1]["lag_alert"] is False


def test_status_shows_a_missing_standby_at_once(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    asyncio.run(rounds(daemon, clock, 2))
    assert daemon.status()["standby_streaming"] is True
    cluster.nodes["b"].running = cluster.nodes["b"].observable = False
    asyncio.run(rounds(daemon, clock, 1))
    status = daemon.status()
    assert status["standby_eligible"] and status["standby_streaming"] is False
    assert "NOT streaming" in format_status(status)


def test_a_relax_runs_beside_a_copy_that_holds_the_cluster_lane(tmp_path: Path) -> None:
    """The standby's data is gone and its copy never ends: the primary's writes wait only until
    sync_relax_after, not for the copy."""
    daemon, cluster, clock = make(tmp_path)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    copying = asyncio.Event()

    async def endless_clone(source: object) -> None:
        copying.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        await rounds(daemon, clock, 2)
        b.running, b.has_data = False, False
        b.clone = endless_clone  # type: ignore[method-assign]
        for _ in range(6):  # not `rounds`: its settling would wait for the endless copy
            await daemon.loop.tick()
            await asyncio.sleep(0.05)
            clock.advance(1.0)
        assert copying.is_set()
        assert daemon.loop.ops.current() == "start_standby of b"  # the copy still runs
        await daemon.loop.stop()

    asyncio.run(scenario())
    assert a.sync_names == "" and not daemon.loop.memory.standby_eligible


def test_an_operator_failover_is_on_disk_before_the_promotion(tmp_path: Path) -> None:
    daemon, cluster, clock = make(tmp_path)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    states = states_at_promotion(b, tmp_path)

    async def scenario() -> None:
        await rounds(daemon, clock, 2)
        a.running = False
        pending = asyncio.ensure_future(daemon.submit(Failover()))
        await rounds(daemon, clock, 3, step=0.1)
        await asyncio.wait_for(pending, 5)

    asyncio.run(scenario())
    assert [(s["promoting"], s["needs_rejoin"]) for s in states] == [("b", ["a"])]


def test_a_restarted_daemon_never_starts_a_primary_that_may_have_been_superseded(
    tmp_path: Path,
) -> None:
    """state.json says a promotion of b was ordered; a is stopped and b cannot be reached: a new
    daemon waits (b may be the primary now) instead of starting a on the old timeline."""
    (tmp_path / "state.json").write_text(
        json.dumps({"primary": "a", "promoting": "b", "needs_rejoin": ["a"]})
    )
    daemon, cluster, clock = make(tmp_path)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    a.running = False
    b.reachable = b.observable = False
    asyncio.run(rounds(daemon, clock, 20, step=0.5))
    assert not any(call.startswith("start") for call in a.calls)
    assert daemon.recorder.last_decision is not None
    assert daemon.recorder.last_decision.code == "primary_superseded"
