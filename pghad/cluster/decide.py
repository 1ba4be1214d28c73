"""The pure decision function: decide(view, memory, config, now) -> Decision. No I/O, no clock.

States (see docs/state-machine.md for the diagram):

    STARTING      no writable node identified yet
    HEALTHY       primary up, standby streaming and eligible for automatic promotion
    DEGRADED      primary up, standby missing, lagging or not (yet) synchronous
    PRIMARY_DOWN  the primary is unreachable; counting toward failover_threshold
    FAILING_OVER  a promotion was ordered this round
    SPLIT_BRAIN   two writable nodes: the stale one is fenced this round

Transitions (every row is exercised in tests/unit/test_decide.py):

    STARTING     -> HEALTHY | DEGRADED      one writable node observed
    HEALTHY      -> DEGRADED                standby gone, lagging, or sync relaxed
    DEGRADED     -> HEALTHY                 standby streaming, synchronous and caught up
    HEALTHY/DEGRADED -> PRIMARY_DOWN        primary unreachable
    PRIMARY_DOWN -> HEALTHY | DEGRADED      primary back before the threshold (a blip)
    PRIMARY_DOWN -> FAILING_OVER            threshold passed and the standby is eligible
    PRIMARY_DOWN -> PRIMARY_DOWN            threshold passed but not eligible (reason given)
    FAILING_OVER -> DEGRADED                the standby is observed writable
    any          -> SPLIT_BRAIN             two writable nodes
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from pghad.config import Config

from .observation import ClusterView, ReplicaInfo

# How long the standby may have heard nothing from the primary's walsender before pghad believes
# the primary is really gone rather than unreachable from pghad alone.
RECEIVER_SILENCE_S = 2.0
# Bytes a standby may trail when pghad makes it the synchronous standby (it catches up quickly).
CAUGHT_UP_BYTES = 16 * 1024 * 1024


class ClusterState(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    PRIMARY_DOWN = "primary_down"
    FAILING_OVER = "failing_over"
    SPLIT_BRAIN = "split_brain"


@dataclass(frozen=True)
class Promote:
    node: str
    old_primary: str
    reason: str


@dataclass(frozen=True)
class Fence:
    node: str
    reason: str


@dataclass(frozen=True)
class Rejoin:
    node: str
    primary: str
    reason: str


@dataclass(frozen=True)
class SetSynchronous:
    primary: str
    standby: str | None
    reason: str


Action = Promote | Fence | Rejoin | SetSynchronous


@dataclass(frozen=True)
class Memory:
    """What the daemon carries between rounds (and persists, see state_store)."""

    state: ClusterState = ClusterState.STARTING
    primary: str | None = None
    primary_down_since: float | None = None
    standby_down_since: float | None = None
    standby_eligible: bool = False
    needs_rejoin: frozenset[str] = frozenset()
    timeline: int | None = None


@dataclass(frozen=True)
class Decision:
    memory: Memory
    actions: tuple[Action, ...] = ()
    code: str = ""
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)


def decide(
    view: ClusterView, memory: Memory, config: Config, now: float, busy: frozenset[str] = frozenset()
) -> Decision:
    """One round: `busy` names nodes a running operation owns (no new action touches them)."""
    writable = view.writable()
    if len(writable) == 2:
        return _split_brain(view, memory, busy)
    if len(writable) == 1:
        return _with_primary(view, memory, config, now, writable[0], busy)
    return _without_primary(view, memory, config, now, busy)


def _split_brain(view: ClusterView, memory: Memory, busy: frozenset[str]) -> Decision:
    first, second = view.writable()
    tl_first, tl_second = view[first].timeline or 0, view[second].timeline or 0
    if tl_first != tl_second:
        keep = first if tl_first > tl_second else second
        why = "the newer timeline"
    elif memory.primary in (first, second):
        keep = memory.primary
        why = "the recorded primary"
    else:
        new = replace(memory, state=ClusterState.SPLIT_BRAIN)
        return Decision(new, (), "split_brain_unresolved",
                        "two writable nodes on the same timeline and no recorded primary: "
                        "fence one by hand (pghad will not guess)")
    stale = second if keep == first else first
    new = replace(memory, state=ClusterState.SPLIT_BRAIN, primary=keep,
                  needs_rejoin=memory.needs_rejoin | {stale}, standby_eligible=False,
                  primary_down_since=None)
    reason = f"{stale} is writable while {keep} is primary ({why}): fencing {stale}"
    actions: tuple[Action, ...] = () if stale in busy else (Fence(stale, reason),)
    return Decision(new, actions, "split_brain_fence", reason, {"keep": keep, "fence": stale})


def _with_primary(
    view: ClusterView, memory: Memory, config: Config, now: float, primary: str,
    busy: frozenset[str],
) -> Decision:
    standby = config.other(primary).name
    obs = view[primary]
    replica = obs.replica(standby)
    streaming = replica is not None and replica.state == "streaming"
    lag = view.lag_bytes(primary, standby)
    actions: list[Action] = []
    needs_rejoin = memory.needs_rejoin - {primary}
    changed_primary = memory.primary is not None and memory.primary != primary
    if changed_primary:
        # The other node was promoted (by us or by hand): the old one must not come back writable.
        needs_rejoin |= {memory.primary} if memory.primary else set()
    standby_down_since = None if streaming else (memory.standby_down_since or now)

    if config.cluster.synchronous:
        eligible, sync_action, code, reason = _synchronous(
            obs.names_sync_standby(standby), replica, lag, standby, primary,
            standby_down_since, now, config.cluster.sync_relax_after,
        )
        if sync_action is not None:
            actions.append(sync_action)
            if sync_action.standby is None:
                eligible = False
    else:
        eligible = streaming and lag is not None and lag <= config.cluster.max_lag_on_failover
        code, reason = (("healthy", f"{standby} streams, {lag} bytes behind") if eligible
                        else ("standby_lagging", f"{standby} is not streaming or lags "
                              f"more than {config.cluster.max_lag_on_failover} bytes"))
        if obs.sync_standby_names:
            actions.append(SetSynchronous(primary, None, "synchronous mode is off in the config"))

    if view[standby].is_standby:
        needs_rejoin -= {standby}
    elif standby in needs_rejoin and config.cluster.auto_rejoin:
        actions.append(Rejoin(standby, primary, f"{standby} is a former primary and is down: "
                              f"rejoining it as a standby of {primary}"))

    state = ClusterState.HEALTHY if eligible else ClusterState.DEGRADED
    if changed_primary:
        code, reason = "primary_changed", f"{primary} is now the primary (was {memory.primary})"
    new = Memory(
        state=state, primary=primary, primary_down_since=None,
        standby_down_since=standby_down_since, standby_eligible=eligible,
        needs_rejoin=frozenset(needs_rejoin), timeline=obs.timeline,
    )
    busy_filtered = tuple(a for a in actions if _target(a) not in busy)
    return Decision(new, busy_filtered, code, reason,
                    {"primary": primary, "standby": standby, "lag_bytes": lag,
                     "eligible": eligible})


def _synchronous(
    named: bool, replica: ReplicaInfo | None, lag: int | None, standby: str, primary: str,
    standby_down_since: float | None, now: float, relax_after: float,
) -> tuple[bool, SetSynchronous | None, str, str]:
    """Eligibility and the sync setting to apply, in synchronous mode."""
    streaming = replica is not None and replica.state == "streaming"
    if streaming and named and replica is not None and replica.sync_state == "sync":
        return True, None, "healthy", f"{standby} is the synchronous standby"
    if streaming and not named:
        if lag is not None and lag <= CAUGHT_UP_BYTES:
            return False, SetSynchronous(primary, standby, f"{standby} caught up"), \
                "enabling_sync", f"{standby} caught up: making it the synchronous standby"
        return False, None, "standby_catching_up", f"{standby} is catching up ({lag} bytes)"
    if streaming:
        return False, None, "standby_not_sync", f"{standby} streams but is not yet synchronous"
    # Not streaming. While it is still named, commits wait for it, so nothing acknowledged is
    # missing on it: it stays eligible until pghad relaxes synchronous replication.
    down_for = now - (standby_down_since or now)
    if named and down_for >= relax_after:
        return False, SetSynchronous(primary, None, f"{standby} down for {down_for:.1f} s"), \
            "relaxing_sync", (f"{standby} has not streamed for {down_for:.1f} s: relaxing "
                              "synchronous replication so the primary keeps taking writes; "
                              f"{standby} is not eligible for promotion until it catches up")
    if named:
        return True, None, "standby_missing", (
            f"{standby} is not streaming ({down_for:.1f} s); commits wait for it until "
            f"{relax_after:g} s")
    return False, None, "standby_down", f"{standby} is not streaming and not synchronous"


def _without_primary(
    view: ClusterView, memory: Memory, config: Config, now: float, busy: frozenset[str]
) -> Decision:
    primary = memory.primary
    if primary is None:
        new = replace(memory, state=ClusterState.STARTING)
        reachable = [n for n, o in view.nodes.items() if o.reachable]
        return Decision(new, (), "no_primary_known",
                        f"no writable node and no recorded primary (reachable: {reachable}); "
                        "not promoting anything: promote by hand or restore the primary")
    standby = config.other(primary).name
    since = memory.primary_down_since if memory.primary_down_since is not None else now
    down_for = now - since
    threshold = config.cluster.failover_threshold
    base = replace(memory, state=ClusterState.PRIMARY_DOWN, primary_down_since=since)
    error = view[primary].error or ("in recovery" if view[primary].is_standby else "down")
    details: dict[str, object] = {"primary": primary, "down_for_s": round(down_for, 3),
                                  "threshold_s": threshold, "error": error}
    if down_for < threshold:
        return Decision(base, (), "primary_down",
                        f"{primary} unreachable for {down_for:.1f} s of {threshold:g} s "
                        f"({error})", details)
    refusal = _refuse_promotion(view, memory, standby, busy)
    if refusal is not None:
        return Decision(base, (), refusal[0], refusal[1], details)
    reason = (f"{primary} unreachable for {down_for:.1f} s (threshold {threshold:g} s, {error}); "
              f"{standby} is eligible: promoting it")
    new = replace(base, state=ClusterState.FAILING_OVER,
                  needs_rejoin=memory.needs_rejoin | {primary})
    return Decision(new, (Promote(standby, primary, reason),), "failover", reason, details)


def _refuse_promotion(
    view: ClusterView, memory: Memory, standby: str, busy: frozenset[str]
) -> tuple[str, str] | None:
    obs = view[standby]
    if standby in busy:
        return "standby_busy", f"not promoting {standby}: an operation is running on it"
    if not obs.reachable:
        return "standby_unreachable", f"not promoting {standby}: it is unreachable too ({obs.error})"
    if not obs.is_standby:
        return "standby_not_in_recovery", f"not promoting {standby}: it is not a standby"
    if not memory.standby_eligible:
        return "standby_ineligible", (
            f"not promoting {standby}: it was not an eligible standby when the primary was last "
            "seen (not synchronous, lagging or not streaming), so it may lack acknowledged "
            "commits; use a forced failover to accept that risk")
    if obs.receiver_status == "streaming" and (obs.receiver_msg_age_s or 0) < RECEIVER_SILENCE_S:
        return "primary_alive_for_standby", (
            f"not promoting {standby}: it still receives WAL from the primary "
            f"({obs.receiver_msg_age_s:.1f} s ago), so the primary is alive and only "
            "unreachable from pghad")
    return None


def _target(action: Action) -> str:
    if isinstance(action, SetSynchronous):
        return action.primary
    return action.node
