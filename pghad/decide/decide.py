"""The pure decision function: decide(view, memory, config, now) -> Decision. No I/O, no clock.

States, transitions and every decision code are in docs/state-machine.md; the table there and
tests/unit/test_decide_codes.py are checked against DECISION_CODES so the three cannot drift.
"""

from __future__ import annotations

from dataclasses import replace

from pghad.config.model import Config
from pghad.decide.codes import DecisionCode
from pghad.decide.eligibility import Link, asynchronous, relax_under_way, stalled_since, synchronous
from pghad.decide.model import (
    Action,
    ClusterState,
    Decision,
    Memory,
    Promote,
    action_target,
    is_safety_action,
)
from pghad.decide.observation import ClusterView, ServerState
from pghad.decide.policy import refuse_promotion
from pghad.decide.repair import repair_standby, restart_primary, restart_self_fenced
from pghad.decide.split_brain import settle, superseded_by_memory, superseded_by_stopped
from pghad.decide.sync_archive import archive_member, compose

# A standby whose flushed position has not moved for this long while commits wait for it counts
# as gone (its relax clock started when it stopped moving).
STALL_GRACE_S = 1.0

DECISION_CODES = tuple(DecisionCode)


def decide(
    view: ClusterView,
    memory: Memory,
    config: Config,
    now: float,
    busy: frozenset[str] = frozenset(),
    *,
    paused: bool = False,
    relaxing: bool = False,
) -> Decision:
    """One round: `busy` names nodes a running operation owns (no new action touches them, but
    for the safety actions: relaxing synchronous replication and fencing a split brain);
    `paused` (maintenance mode): no promotion, start, rejoin or change of the synchronous
    standby; only the safety actions (relaxing synchronous replication, fencing a second or
    stale primary) still run;
    `relaxing`: a relax of synchronous replication is under way (no standby turns eligible).
    """
    if paused:
        busy = frozenset(node.name for node in config.nodes)
    writable = view.writable()
    seen = (memory.seen_in_recovery | {n for n, o in view.nodes.items() if o.is_standby}) - set(
        writable
    )
    memory = replace(
        memory, seen_in_recovery=frozenset(seen), fence_timing=_confirmed_timing(view, memory)
    )
    # Paused or not, two primaries are never left writable: fencing is a safety action.
    if len(writable) == 2:
        return settle(view, memory, now)
    if len(writable) == 1:
        stale = superseded_by_stopped(
            view, memory, now, writable[0], config.other(writable[0]).name
        ) or superseded_by_memory(view, memory, now, writable[0])
        if stale is not None:
            return stale
        return _with_primary(
            view, memory, config, now, primary=writable[0], busy=busy, relaxing=relaxing
        )
    return _without_primary(view, memory, config, now, busy, paused=paused)


def _with_primary(
    view: ClusterView,
    memory: Memory,
    config: Config,
    now: float,
    *,
    primary: str,
    busy: frozenset[str],
    relaxing: bool,
) -> Decision:
    standby = config.other(primary).name
    obs = view[primary]
    replica = obs.replica(standby)
    lag = view.lag_bytes(primary, standby)
    last_flush = memory.standby_flush if memory.primary == primary else None
    stall = stalled_since(memory.standby_progress_at, last_flush, replica, lag, now)
    stalled = stall is not None and now - stall >= STALL_GRACE_S
    streaming = replica is not None and replica.streaming and not stalled
    since = memory.standby_down_since if memory.standby_down_since is not None else stall
    standby_down_since = None if streaming else (since if since is not None else now)
    link = Link(
        primary=primary,
        standby=standby,
        replica=replica,
        named=obs.names_sync_standby(standby),
        lag=lag,
        down_for=0.0 if standby_down_since is None else now - standby_down_since,
        primary_lsn=obs.current_lsn,
        watermark=memory.sync_watermark,
        was_eligible=memory.standby_eligible,
        stalled=stalled,
    )
    if relaxing:
        verdict = relax_under_way(link)
    elif config.cluster.synchronous:
        verdict = synchronous(link, config.cluster.sync_relax_after)
    else:
        verdict = asynchronous(link, config.cluster.max_lag_on_failover, obs.sync_standby_names)
    archive = archive_member(config, obs, memory.archive_down_since, now)
    sync_change = compose(obs, standby, verdict.action, archive)
    actions: list[Action] = [sync_change] if sync_change else []

    needs_rejoin = memory.needs_rejoin - {primary}
    changed_primary = memory.primary is not None and memory.primary != primary
    if changed_primary and memory.primary is not None:
        # The other node was promoted (by us or by hand): the old one must not come back writable.
        needs_rejoin |= {memory.primary}
    if streaming or view[standby].is_standby:
        needs_rejoin -= {standby}
    code, reason = verdict.code, verdict.reason
    repair = repair_standby(view[standby], primary, standby in needs_rejoin, config)
    if repair is not None:
        if verdict.action is None:
            code, reason = repair.code, repair.reason
        actions += [repair.action] if repair.action else []
    if changed_primary:
        code, reason = (
            DecisionCode.PRIMARY_CHANGED,
            f"{primary} is now the primary (was {memory.primary})",
        )
    new = Memory(
        state=ClusterState.HEALTHY if verdict.eligible else ClusterState.DEGRADED,
        primary=primary,
        primary_down_since=None,
        standby_down_since=standby_down_since,
        standby_eligible=verdict.eligible,
        needs_rejoin=frozenset(needs_rejoin),
        timeline=obs.timeline,
        sync_watermark=verdict.watermark,
        archive_down_since=archive.down_since if archive else None,
        standby_flush=replica.flush_lsn if replica else None,
        standby_seen_at=now,
        # A new position was reached after the round before: the stall clock starts there.
        standby_progress_at=(
            stall if stall is not None else now if not lag else (memory.standby_seen_at or now)
        ),
        primary_seen_at=now,
        promoting=_still_promoting(memory.promoting, primary, streaming),
        seen_in_recovery=memory.seen_in_recovery,
        fence_timing=memory.fence_timing,
    )
    details: dict[str, object] = {
        "primary": primary,
        "standby": standby,
        "lag_bytes": link.lag,
        "eligible": verdict.eligible,
        **({"archive_sync": archive.member} if archive else {}),
    }
    allowed = tuple(a for a in actions if action_target(a) not in busy or is_safety_action(a))
    return Decision(new, allowed, code, reason, details)


def _still_promoting(promoting: str | None, primary: str, streaming: bool) -> str | None:
    """A promotion ordered earlier is settled once its node is the primary, or streams as a
    standby of the primary (it did not take effect)."""
    if promoting is None or promoting == primary or streaming:
        return None
    return promoting


def _without_primary(
    view: ClusterView,
    memory: Memory,
    config: Config,
    now: float,
    busy: frozenset[str],
    *,
    paused: bool,
) -> Decision:
    primary = memory.primary
    if primary is None:
        new = replace(memory, state=ClusterState.STARTING)
        reachable = [n for n, o in view.nodes.items() if o.reachable]
        return Decision(
            new,
            (),
            DecisionCode.NO_PRIMARY_KNOWN,
            f"no writable node and no recorded primary (reachable: {reachable}); "
            "not promoting anything: promote by hand or restore the primary",
        )
    standby = config.other(primary).name
    # Silence counts from the last contact (from start-up when this daemon had none).
    since = next(
        (t for t in (memory.primary_down_since, memory.primary_seen_at) if t is not None), now
    )
    down_for = now - since
    threshold = _failover_threshold(memory, primary, config)
    base = replace(memory, state=ClusterState.PRIMARY_DOWN, primary_down_since=since)
    error = view[primary].error or ("in recovery" if view[primary].is_standby else "down")
    details: dict[str, object] = {
        "primary": primary,
        "down_for_s": round(down_for, 3),
        "threshold_s": threshold,
        "error": error,
    }
    back = restart_self_fenced(view, memory, primary, standby, config)
    if back is not None and back.node not in busy:
        return Decision(base, (back,), DecisionCode.RESTARTING_PRIMARY, back.reason, details)
    if down_for < threshold:
        return Decision(
            base,
            (),
            DecisionCode.PRIMARY_DOWN,
            f"{primary} unreachable for {down_for:.1f} s of {threshold:g} s ({error})",
            details,
        )
    refusal = refuse_promotion(
        view,
        memory.standby_eligible,
        standby,
        busy,
        paused=paused,
        threshold=threshold,
        primary=primary,
        now=now,
    )
    if refusal is not None:
        restart = restart_primary(
            view, memory, primary=primary, standby=standby, refusal=refusal, config=config
        )
        if restart is not None:
            actions = (restart.action,) if restart.action else ()
            return Decision(base, actions, restart.code, restart.reason, details)
        return Decision(base, (), refusal.code, refusal.reason, details)
    reason = (
        f"{primary} unreachable for {down_for:.1f} s (threshold {threshold:g} s, {error}); "
        f"{standby} is eligible: promoting it"
    )
    new = replace(
        base,
        state=ClusterState.FAILING_OVER,
        needs_rejoin=memory.needs_rejoin | {primary},
        standby_eligible=False,
        promoting=standby,
        seen_in_recovery=memory.seen_in_recovery - {standby},
    )
    # A host that does not answer has fenced itself by now (synchronous mode: it cannot
    # acknowledge alone either): the promotion does not wait for its fence.
    wait = view[primary].server is not ServerState.UNKNOWN or not config.cluster.synchronous
    promote = Promote(standby, primary, reason, wait_for_fence=wait)
    return Decision(new, (promote,), DecisionCode.FAILOVER, reason, details)


def _confirmed_timing(view: ClusterView, memory: Memory) -> tuple[tuple[str, float], ...]:
    timing = dict(memory.fence_timing)
    for name, obs in view.nodes.items():
        witness = obs.witness
        if witness is not None and witness.available and witness.self_fence_after is not None:
            timing[name] = witness.self_fence_after
    return tuple(sorted(timing.items()))


def _failover_threshold(memory: Memory, primary: str, config: Config) -> float:
    """The threshold, or longer while the primary's agent last confirmed a longer self-fence
    timing (the threshold was lowered while it was cut off): it must have fenced first."""
    threshold = config.cluster.failover_threshold
    confirmed = dict(memory.fence_timing).get(primary)
    if confirmed is None:
        return threshold
    return round(max(threshold, confirmed + threshold - config.self_fence_after), 3)
