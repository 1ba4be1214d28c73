"""The pure decision function: transition table rows and properties that must always hold."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pghad.config.model import Config, parse_config
from pghad.daemon.memory_file import load_memory, save_memory
from pghad.decide.codes import DecisionCode
from pghad.decide.decide import decide
from pghad.decide.model import (
    ClusterState,
    Fence,
    Memory,
    Promote,
    Rejoin,
    SetSynchronous,
    StartPrimary,
    StartStandby,
)
from pghad.decide.observation import (
    ClusterView,
    ControlData,
    NodeObservation,
    ReplicaInfo,
    ServerState,
    Witness,
    parse_controldata,
)

CONFIG_TEXT = """
[cluster]
failover_threshold = {threshold}
synchronous = {sync}
sync_relax_after = 3.0

[[nodes]]
name = "a"
port = 5432
data_dir = "/a"

[[nodes]]
name = "b"
port = 5433
data_dir = "/b"
"""


def config(threshold: float = 10, sync: bool = True) -> Config:
    return parse_config(CONFIG_TEXT.format(threshold=threshold, sync=str(sync).lower()))


def primary(
    name: str = "a",
    standby: str = "b",
    *,
    sync_state: str = "sync",
    named: bool = True,
    streaming: bool = True,
    lsn: int = 1000,
    flush: int = 1000,
    tl: int = 1,
) -> NodeObservation:
    replicas = (
        (ReplicaInfo(standby, "streaming", sync_state, flush, flush, 0.0),) if streaming else ()
    )
    return NodeObservation(
        name,
        True,
        in_recovery=False,
        timeline=tl,
        current_lsn=lsn,
        sync_standby_names=f'"{standby}"' if named else "",
        replicas=replicas,
    )


def standby(
    name: str = "b",
    receiver: str | None = None,
    age: float | None = None,
    witness: Witness | None = None,
) -> NodeObservation:
    return NodeObservation(
        name,
        True,
        witness=witness,
        in_recovery=True,
        timeline=1,
        receive_lsn=1000,
        replay_lsn=1000,
        receiver_status=receiver,
        receiver_msg_age_s=age,
    )


def down(name: str, server: ServerState = ServerState.STOPPED) -> NodeObservation:
    return NodeObservation(name, False, error="Connection refused", server=server)


def stopped(name: str, state: str, timeline: int) -> NodeObservation:
    """A stopped server whose pg_control its driver read."""
    return replace(down(name), control=ControlData(state, timeline))


def view(*nodes: NodeObservation) -> ClusterView:
    return ClusterView({n.name: n for n in nodes})


HEALTHY = Memory(state=ClusterState.HEALTHY, primary="a", standby_eligible=True)
# A daemon restarted while the primary is down: it has seen no node since it started.
DOWN_AFTER_RESTART = Memory(
    state=ClusterState.PRIMARY_DOWN, primary="a", primary_down_since=0.0, standby_eligible=True
)


def test_starting_with_one_writable_node_makes_it_primary_and_enables_sync() -> None:
    d = decide(view(primary(named=False, sync_state="async"), standby()), Memory(), config(), 0)
    assert d.memory.primary == "a"
    assert d.memory.state is ClusterState.DEGRADED
    assert d.actions == (SetSynchronous("a", "b", "b caught up"),)


def test_synchronous_streaming_standby_is_healthy_and_eligible() -> None:
    d = decide(view(primary(), standby()), Memory(primary="a"), config(), 0)
    assert (d.memory.state, d.memory.standby_eligible, d.actions) == (
        ClusterState.HEALTHY,
        True,
        (),
    )


def test_lagging_standby_is_not_made_synchronous() -> None:
    far = primary(named=False, sync_state="async", lsn=10**10, flush=1)
    d = decide(view(far, standby()), HEALTHY, config(), 0)
    assert d.actions == () and d.code == "standby_catching_up" and not d.memory.standby_eligible


def test_primary_down_below_threshold_waits() -> None:
    d = decide(view(down("a"), standby()), HEALTHY, config(threshold=10), 100.0)
    assert d.memory.state is ClusterState.PRIMARY_DOWN
    assert d.memory.primary_down_since == 100.0 and d.actions == ()
    d2 = decide(view(down("a"), standby()), d.memory, config(threshold=10), 109.9)
    assert d2.actions == ()


def test_primary_down_past_threshold_promotes_eligible_standby() -> None:
    memory = replace(HEALTHY, state=ClusterState.PRIMARY_DOWN, primary_down_since=100.0)
    d = decide(view(down("a"), standby()), memory, config(threshold=10), 110.0)
    assert [(type(a), a.node) for a in d.actions if isinstance(a, Promote)] == [(Promote, "b")]
    assert len(d.actions) == 1
    assert d.memory.state is ClusterState.FAILING_OVER
    assert "a" in d.memory.needs_rejoin


def test_blip_resets_the_timer() -> None:
    memory = replace(HEALTHY, state=ClusterState.PRIMARY_DOWN, primary_down_since=100.0)
    back = decide(view(primary(), standby()), memory, config(threshold=10), 105.0)
    assert back.memory.primary_down_since is None
    again = decide(view(down("a"), standby()), back.memory, config(threshold=10), 111.0)
    # Silence counts from the last contact (105), not from the first failed probe.
    assert again.actions == () and again.memory.primary_down_since == 105.0


def test_ineligible_standby_is_not_promoted_and_the_decision_says_so() -> None:
    memory = Memory(
        state=ClusterState.PRIMARY_DOWN, primary="a", primary_down_since=0.0, standby_eligible=False
    )
    unseen = down("a", ServerState.UNKNOWN)  # pghad cannot tell whether it runs
    d = decide(view(unseen, standby()), memory, config(threshold=1), 50.0)
    assert d.actions == () and d.code == "standby_ineligible"
    assert d.memory.state is ClusterState.PRIMARY_DOWN and d.details["primary"] == "a"


def test_a_stopped_primary_whose_standby_may_not_take_over_is_started_again() -> None:
    memory = Memory(
        state=ClusterState.PRIMARY_DOWN, primary="a", primary_down_since=0.0, standby_eligible=False
    )
    d = decide(view(down("a"), standby()), memory, config(threshold=1), 50.0)
    assert d.code == "restarting_primary" and d.memory.primary == "a"
    assert d.actions == (StartPrimary("a", d.reason),)
    eligible = replace(memory, standby_eligible=True)  # the same cluster, b eligible: b takes over
    assert decide(view(down("a"), standby()), eligible, config(1), 50).code == "failover"
    seen = replace(memory, standby_eligible=True, seen_in_recovery=frozenset({"b"}))
    d = decide(view(down("a"), down("b")), seen, config(1), 50)
    assert d.code == "restarting_primary"  # the standby is down too, last seen as a standby
    unseen = replace(memory, standby_eligible=True)
    d = decide(view(down("a"), down("b")), unseen, config(1), 50)
    assert d.code == "primary_superseded" and d.actions == ()  # b may be a newer primary
    no_data = down("a", ServerState.NO_DATA)  # only a restore brings it back: left to the operator
    assert decide(view(no_data, standby()), memory, config(1), 50).code == "standby_ineligible"
    assert decide(view(down("a"), standby()), memory, config(1), 0.5).code == "primary_down"
    manual = parse_config(
        CONFIG_TEXT.format(threshold=1, sync="true").replace(
            "[cluster]", "[cluster]\nauto_rejoin = false"
        )
    )
    assert decide(view(down("a"), standby()), memory, manual, 50).code == "standby_ineligible"


def test_stopped_servers_pg_control_settles_which_one_is_started_as_the_primary() -> None:
    """A restarted daemon that never saw the standby: pg_control says how each server stopped.
    The node that stopped as a primary on the newest timeline is started; never the other."""
    fresh = replace(DOWN_AFTER_RESTART, primary="a")
    # b stopped in recovery: it is a standby, so a (the primary on timeline 1) is started.
    d = decide(
        view(stopped("a", "in production", 1), stopped("b", "shut down in recovery", 1)),
        fresh,
        config(1),
        50,
    )
    assert d.code == "restarting_primary" and d.actions == (StartPrimary("a", d.reason),)
    # b was promoted (timeline 2) and stopped: b is started, whatever memory recorded.
    d = decide(
        view(stopped("a", "shut down", 1), stopped("b", "shut down", 2)),
        replace(fresh, seen_in_recovery=frozenset({"b"})),
        config(1),
        50,
    )
    assert d.code == "starting_newest_primary" and d.actions == (StartPrimary("b", d.reason),)
    # a was rewound under b (a standby now) and b's pg_control cannot be read: a is not started.
    d = decide(view(stopped("a", "shut down in recovery", 2), down("b")), fresh, config(1), 50)
    assert d.code == "primary_superseded" and d.actions == ()
    # Two primaries on one timeline (pg_control not past the promotion): nothing is started.
    d = decide(
        view(stopped("a", "in production", 1), stopped("b", "in production", 1)),
        fresh,
        config(1),
        50,
    )
    assert d.code == "primary_superseded" and d.actions == ()
    # A promotion ordered but the standby stopped in recovery: it did not take effect.
    ordered = replace(fresh, promoting="b", needs_rejoin=frozenset({"a"}))
    d = decide(
        view(stopped("a", "in production", 1), stopped("b", "shut down in recovery", 1)),
        ordered,
        config(1),
        50,
    )
    assert d.code == "restarting_primary" and d.actions == (StartPrimary("a", d.reason),)


def test_pg_controldata_output_is_read_as_postgresql_18_prints_it() -> None:
    text = """pg_control version number:            1800
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/2000080
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Minimum recovery ending location:     0/3000000
Min recovery ending loc's timeline:   2
"""
    control = parse_controldata(text)
    assert control == ControlData("shut down in recovery", 2, 0x2000080)
    assert control.was_standby and not control.was_primary
    killed = parse_controldata(
        "Database cluster state:  in production\n"
        "Latest checkpoint's TimeLineID:       3\n"
        "Min recovery ending loc's timeline:   0\n"
    )
    assert killed == ControlData("in production", 3) and killed.was_primary


def test_standby_still_receiving_wal_means_the_primary_is_alive() -> None:
    memory = replace(HEALTHY, primary_down_since=0.0)
    d = decide(view(down("a"), standby(receiver="streaming", age=0.2)), memory, config(1), 50.0)
    assert d.actions == () and d.code == "primary_alive_for_standby"


def test_both_down_promotes_nothing() -> None:
    memory = replace(HEALTHY, primary_down_since=0.0)
    d = decide(view(down("a", ServerState.UNKNOWN), down("b")), memory, config(threshold=1), 50.0)
    assert d.actions == () and d.code == "standby_unreachable"


def test_standby_down_past_relax_threshold_relaxes_sync_and_loses_eligibility() -> None:
    no_standby = primary(streaming=False)
    unseen = down("b", ServerState.UNKNOWN)  # pghad cannot tell: it does not try to start it
    first = decide(view(no_standby, unseen), HEALTHY, config(), 10.0)
    assert first.actions == () and first.memory.standby_eligible  # commits still wait for b
    later = decide(view(no_standby, unseen), first.memory, config(), 13.0)
    assert later.actions == (SetSynchronous("a", None, "b down for 3.0 s", relax=True),)
    assert not later.memory.standby_eligible


def test_two_writable_nodes_fence_the_older_timeline() -> None:
    d = decide(view(primary("a", "b", tl=1), primary("b", "a", tl=2)), HEALTHY, config(), 0)
    assert d.memory.primary == "b"
    assert d.actions == (Fence("a", d.reason),)
    assert d.memory.state is ClusterState.SPLIT_BRAIN


def test_two_writable_same_timeline_without_memory_does_nothing() -> None:
    d = decide(view(primary("a", "b"), primary("b", "a")), Memory(), config(), 0)
    assert d.actions == () and d.code == "split_brain_unresolved"


def test_former_primary_down_is_rejoined_then_forgotten_once_a_standby() -> None:
    memory = Memory(state=ClusterState.FAILING_OVER, primary="b", needs_rejoin=frozenset({"a"}))
    d = decide(
        view(down("a"), primary("b", "a", streaming=False, named=False)), memory, config(), 0
    )
    assert any(isinstance(a, Rejoin) and a.node == "a" for a in d.actions)
    d2 = decide(
        view(standby("a"), primary("b", "a", named=False, sync_state="async")),
        d.memory,
        config(),
        1,
    )
    assert "a" not in d2.memory.needs_rejoin


def test_busy_node_gets_no_new_action() -> None:
    memory = Memory(state=ClusterState.FAILING_OVER, primary="b", needs_rejoin=frozenset({"a"}))
    d = decide(
        view(down("a"), primary("b", "a", streaming=False, named=False)),
        memory,
        config(),
        0,
        busy=frozenset({"a"}),
    )
    assert not any(isinstance(a, Rejoin) for a in d.actions)


def test_asynchronous_mode_uses_lag_for_eligibility() -> None:
    cfg = config(sync=False)
    near = primary(named=False, sync_state="async", lsn=2000, flush=1000)
    assert decide(view(near, standby()), Memory(), cfg, 0).memory.standby_eligible
    far = primary(named=False, sync_state="async", lsn=10**9, flush=1000)
    assert not decide(view(far, standby()), Memory(), cfg, 0).memory.standby_eligible


def test_nothing_known_and_no_writable_node_promotes_nothing() -> None:
    d = decide(view(standby("a"), standby("b")), Memory(), config(), 0)
    assert d.actions == () and d.code == "no_primary_known"


# ---- properties over random observation sequences ----------------------------------------

node_obs = st.sampled_from(["primary", "standby", "down", "standby_receiving"])


def _observe(name: str, other: str, kind: str, synced: bool) -> NodeObservation:
    if kind == "primary":
        return primary(name, other, sync_state="sync" if synced else "async", named=synced)
    if kind == "standby":
        return standby(name)
    if kind == "standby_receiving":
        return standby(name, receiver="streaming", age=0.1)
    return down(name)


@settings(max_examples=300, deadline=None)
@given(
    rounds=st.lists(
        st.tuples(node_obs, node_obs, st.booleans(), st.floats(0.1, 5)), min_size=1, max_size=30
    ),
    threshold=st.sampled_from([1.0, 2.0, 10.0]),
)
def test_properties_hold_over_any_sequence(
    rounds: list[tuple[str, str, bool, float]], threshold: float
) -> None:
    cfg = config(threshold=threshold)
    memory = Memory()
    now = 0.0
    started = rounds[0][3]
    last_contact: dict[str, float] = {}
    for kind_a, kind_b, synced, step in rounds:
        now += step
        v = view(_observe("a", "b", kind_a, synced), _observe("b", "a", kind_b, synced))
        for name, kind in (("a", kind_a), ("b", kind_b)):
            if kind == "primary":
                last_contact[name] = now
        d = decide(v, memory, cfg, now)
        promotes = [a for a in d.actions if isinstance(a, Promote)]
        assert len(promotes) <= 1
        for action in promotes:
            old = action.old_primary
            # Never promote while the primary answers, or a standby that is not eligible.
            assert not v[old].writable
            assert memory.standby_eligible
            # Never before the full threshold since the last contact (or since start-up).
            assert now - last_contact.get(old, started) >= threshold - 1e-9
            assert v[action.node].is_standby
        # Two writable nodes: one of them is always fenced (or the daemon refuses to guess).
        if len(v.writable()) == 2:
            assert (
                any(isinstance(a, Fence) for a in d.actions) or d.code == "split_brain_unresolved"
            )
        memory = d.memory


def test_new_synchronous_standby_is_eligible_only_once_it_has_the_async_era_wal() -> None:
    # First seen synchronous while trailing: commits acknowledged before the switch (up to LSN
    # 5000) may be missing on it.
    first = decide(view(primary(lsn=5000, flush=4000), standby()), Memory(primary="a"), config(), 0)
    assert first.code == "sync_confirming" and not first.memory.standby_eligible
    assert first.memory.sync_watermark == 5000
    still = decide(view(primary(lsn=9000, flush=4999), standby()), first.memory, config(), 1)
    assert not still.memory.standby_eligible
    caught = decide(view(primary(lsn=9000, flush=5000), standby()), still.memory, config(), 2)
    assert caught.code == "healthy" and caught.memory.standby_eligible


def test_missing_standby_keeps_only_the_eligibility_it_had() -> None:
    never = Memory(primary="a", standby_eligible=False)
    d = decide(view(primary(streaming=False), down("b", ServerState.UNKNOWN)), never, config(), 0)
    assert d.code == "standby_missing" and not d.memory.standby_eligible


def test_with_an_agent_a_failover_needs_its_word_that_the_primary_is_down_too() -> None:
    memory = Memory(
        state=ClusterState.PRIMARY_DOWN, primary="a", standby_eligible=True, primary_down_since=0.0
    )
    cfg = config(threshold=2)

    def decided(witness: Witness) -> str:
        unreachable = down("a", ServerState.UNKNOWN)
        return decide(view(unreachable, standby(witness=witness)), memory, cfg, now=2.1).code

    assert decided(Witness(True, None)) == "primary_alive_for_standby"  # its host reaches it
    assert decided(Witness(True, 0.8)) == "primary_alive_for_standby"  # lost there only lately
    assert decided(Witness(False, None)) == "standby_witness_unknown"
    assert decided(Witness(True, 1.9)) == "failover"  # within the agent's checking slack


def test_a_primary_whose_agent_says_its_server_serves_locally_is_not_failed_over() -> None:
    """pghad's connections to a are refused and b's host has lost a for the whole threshold,
    but a's agent answers that its own SQL check of a answers as a writable primary: a is alive
    (the daemon reaches its host), so no promotion. Its silence or a failed check is no word."""
    memory = Memory(
        state=ClusterState.PRIMARY_DOWN, primary="a", standby_eligible=True, primary_down_since=0.0
    )
    b = standby(witness=Witness(True, 10.0))  # b's host lost a as long as pghad did

    def decided(primary_agent: Witness) -> str:
        refused = replace(down("a", ServerState.RUNNING), witness=primary_agent)
        return decide(view(refused, b), memory, config(threshold=10), now=10.5).code

    assert decided(Witness(True, None, at=10.3, serving=True)) == "primary_running"
    assert decided(Witness(True, None, at=10.3, serving=False)) == "failover"  # frozen, hung
    assert decided(Witness(False, None, at=10.3, serving=True)) == "failover"  # no answer
    # Its last answer before the cut of its host: past half the threshold, it says nothing now.
    assert decided(Witness(True, None, at=4.0, serving=True)) == "failover"


def test_a_primary_on_an_older_timeline_than_a_stopped_primary_is_fenced() -> None:
    """A state file older than the cluster says a is the primary; b stopped as a primary on a
    newer timeline (its pg_control). Starting b as a standby under a would throw away what b
    acknowledged: a is fenced, and b is kept (then started as the newest primary)."""
    stale = Memory(state=ClusterState.HEALTHY, primary="a", standby_eligible=True)
    b_newer = stopped("b", "in production", 2)
    d = decide(view(primary(named=False), b_newer), stale, config(), now=1.0)
    assert d.code == "split_brain_fence" and d.actions == (Fence("a", d.reason),)
    assert d.memory.primary == "b" and "a" in d.memory.needs_rejoin
    paused = decide(view(primary(named=False), b_newer), stale, config(), 1.0, paused=True)
    assert paused.actions == d.actions  # a safety action: paused too
    for not_newer in (stopped("b", "in production", 1), stopped("b", "shut down in recovery", 2)):
        d = decide(view(primary(named=False), not_newer), stale, config(), now=1.0)
        assert not any(isinstance(a, Fence) for a in d.actions), d


def test_failover_waits_for_the_self_fence_timing_the_primarys_agent_last_confirmed() -> None:
    """The threshold was lowered to 2 s while the primary's agent, cut off, still fences after
    the 7.5 s it confirmed before: no promotion before that agent has fenced."""
    memory = Memory(
        state=ClusterState.PRIMARY_DOWN, primary="a", standby_eligible=True, primary_down_since=0.0
    )
    cfg = config(threshold=2)  # self_fence_after 1.5 s

    def decided(confirmed: float | None, now: float) -> str:
        """`confirmed`: what the daemon's memory (state.json) holds for the primary's agent."""
        cut_off = NodeObservation("a", False, error="timeout", witness=Witness(False, None))
        timing = (("a", confirmed),) if confirmed is not None else ()
        witness = Witness(True, now)  # the standby's host lost the primary as long
        held = replace(memory, fence_timing=timing)
        return decide(view(cut_off, standby(witness=witness)), held, cfg, now=now).code

    assert decided(1.5, 2.1) == "failover"  # it confirmed the daemon's own timing
    assert decided(None, 2.1) == "failover"  # an agent of an older pghad, or none confirmed yet
    assert decided(7.5, 2.1) == "primary_down"
    assert decided(7.5, 7.9) == "primary_down"
    assert decided(7.5, 8.1) == "failover"  # 7.5 s and the configured 0.5 s margin


def test_the_confirmed_self_fence_timing_is_kept_in_memory_and_survives_its_file(
    tmp_path: Path,
) -> None:
    """What an agent confirmed is in the daemon's memory (state.json), not in its process: a
    daemon restarted while that agent is cut off still waits for it."""
    agent_said = standby(witness=Witness(True, None, 0.0, 7.5))
    d = decide(view(primary(), agent_said), HEALTHY, config(threshold=10), 0)
    assert dict(d.memory.fence_timing) == {"b": 7.5}
    save_memory(tmp_path, d.memory, [])
    assert dict(load_memory(tmp_path, {"a", "b"}).fence_timing) == {"b": 7.5}
    silent = standby(witness=Witness(False, None))  # no answer: the last confirmed one stays
    d = decide(view(primary(), silent), d.memory, config(threshold=10), 1)
    assert dict(d.memory.fence_timing) == {"b": 7.5}


def test_a_standby_that_stops_flushing_while_commits_wait_is_relaxed_early() -> None:
    """Relaxed sync_relax_after seconds after it stopped moving, not after wal_sender_timeout."""
    cfg = config()  # sync_relax_after 3 s
    memory = Memory(primary="a", standby_eligible=True, state=ClusterState.HEALTHY)
    frozen = view(primary(lsn=5000, flush=1000), standby())  # still "streaming" on the primary
    codes = []
    for now in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0):
        decision = decide(frozen, memory, cfg, now=now)
        memory = decision.memory
        codes.append(decision.code)
    assert DecisionCode.STANDBY_MISSING in codes  # commits wait: it stays eligible for a while
    assert codes.index(DecisionCode.RELAXING_SYNC) <= 4  # relaxed 3 s after it stopped moving

    moving = [view(primary(lsn=5000 + 100 * i, flush=4950 + 100 * i), standby()) for i in range(6)]
    memory = Memory(primary="a", standby_eligible=True, state=ClusterState.HEALTHY)
    for now, cluster in enumerate(moving):
        memory = decide(cluster, memory, cfg, now=float(now)).memory
    assert memory.standby_progress_at == 4.0 and memory.standby_eligible


def test_a_promoted_node_that_fenced_itself_while_cut_off_is_started_again() -> None:
    """b was promoted (a to rejoin), then fenced itself while cut off; its agent answers again.
    Nothing else may take writes (a may have been superseded): b is started again."""
    memory = Memory(primary="a", promoting="b", needs_rejoin=frozenset({"a"}))
    fenced = Witness(True, None, 0.0, None, self_fenced=True)
    b = NodeObservation("b", False, error="refused", server=ServerState.STOPPED, witness=fenced)
    d = decide(view(down("a"), b), memory, config(threshold=10), 1.0)
    assert d.code == "restarting_primary" and [type(a) for a in d.actions] == [StartPrimary]
    assert d.actions[0].node == "b"  # type: ignore[union-attr]
    crashed = replace(b, witness=Witness(True, None, 0.0, None))  # not a precaution: left alone
    assert decide(view(down("a"), crashed), memory, config(threshold=10), 1.0).actions == ()


def test_a_node_with_no_data_supersedes_nothing() -> None:
    """A promotion of b was ordered, but b has lost its data: a holds everything and is
    started again once b may not be promoted."""
    memory = Memory(
        state=ClusterState.PRIMARY_DOWN,
        primary="a",
        promoting="b",
        needs_rejoin=frozenset({"a"}),
        primary_down_since=0.0,
    )
    no_data = down("b", ServerState.NO_DATA)
    d = decide(view(down("a"), no_data), memory, config(threshold=1), 50.0)
    assert d.code == "restarting_primary" and d.actions == (StartPrimary("a", d.reason),)


def test_paused_a_split_brain_is_still_fenced_and_nothing_else_is_done() -> None:
    two = view(primary("a", "b", tl=1), primary("b", "a", tl=2))
    d = decide(two, HEALTHY, config(), 0, paused=True)
    assert d.code == "split_brain_fence" and d.actions == (Fence("a", d.actions[0].reason),)
    down_standby = view(primary(streaming=False), down("b"))
    d = decide(down_standby, HEALTHY, config(), 0, paused=True)
    assert not any(isinstance(a, StartStandby | Rejoin) for a in d.actions)
