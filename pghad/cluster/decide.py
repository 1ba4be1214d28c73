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

from .observation import ClusterView, ReplicaInfo, format_lsn

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
    # The primary's WAL position when the standby was first seen synchronous: commits before it
    # may have been acknowledged asynchronously, so the standby is eligible once it has that much.
    sync_watermark: int | None = None


@dataclass(frozen=True)
class Decision:
    memory: Memory
    actions: tuple[Action, ...] = ()
    code: str = ""
    reason: str = ""
    details: dict[str, object] = field(default_factory=dict)


def decide(
    view: ClusterView,
    memory: Memory,
    config: Config,
    now: float,
    busy: frozenset[str] = frozenset(),
) -> Decision:
    """One round: `busy` names nodes a running operation owns (no new action touches them)."""
    writable = view.writable()
    if len(writable) == 2:
        return _split_brain(view, memory, busy)
    if len(writable) == 1:
        return _with_primary(view, memory, config, now, primary=writable[0], busy=busy)
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
        return Decision(
            new,
            (),
            "split_brain_unresolved",
            "two writable nodes on the same timeline and no recorded primary: "
            "fence one by hand (pghad will not guess)",
        )
    stale = second if keep == first else first
    new = replace(
        memory,
        state=ClusterState.SPLIT_BRAIN,
        primary=keep,
        needs_rejoin=memory.needs_rejoin | {stale},
        standby_eligible=False,
        primary_down_since=None,
    )
    reason = f"{stale} is writable while {keep} is primary ({why}): fencing {stale}"
    actions: tuple[Action, ...] = () if stale in busy else (Fence(stale, reason),)
    return Decision(new, actions, "split_brain_fence", reason, {"keep": keep, "fence": stale})


@dataclass(frozen=True)
class _Link:
    """The primary's view of its standby in one round."""

    primary: str
    standby: str
    replica: ReplicaInfo | None
    named: bool
    lag: int | None
    down_for: float
    primary_lsn: int | None = None
    watermark: int | None = None
    was_eligible: bool = False

    @property
    def streaming(self) -> bool:
        return self.replica is not None and self.replica.state == "streaming"


@dataclass(frozen=True)
class _Verdict:
    eligible: bool
    code: str
    reason: str
    action: SetSynchronous | None = None
    watermark: int | None = None


def _with_primary(
    view: ClusterView,
    memory: Memory,
    config: Config,
    now: float,
    *,
    primary: str,
    busy: frozenset[str],
) -> Decision:
    standby = config.other(primary).name
    obs = view[primary]
    replica = obs.replica(standby)
    streaming = replica is not None and replica.state == "streaming"
    standby_down_since = None if streaming else (memory.standby_down_since or now)
    link = _Link(
        primary=primary,
        standby=standby,
        replica=replica,
        named=obs.names_sync_standby(standby),
        lag=view.lag_bytes(primary, standby),
        down_for=now - (standby_down_since or now),
        primary_lsn=obs.current_lsn,
        watermark=memory.sync_watermark,
        was_eligible=memory.standby_eligible,
    )
    if config.cluster.synchronous:
        verdict = _synchronous(link, config.cluster.sync_relax_after)
    else:
        verdict = _asynchronous(link, config.cluster.max_lag_on_failover, obs.sync_standby_names)
    actions: list[Action] = [verdict.action] if verdict.action else []

    needs_rejoin = memory.needs_rejoin - {primary}
    changed_primary = memory.primary is not None and memory.primary != primary
    if changed_primary and memory.primary is not None:
        # The other node was promoted (by us or by hand): the old one must not come back writable.
        needs_rejoin |= {memory.primary}
    if view[standby].is_standby:
        needs_rejoin -= {standby}
    elif standby in needs_rejoin and config.cluster.auto_rejoin:
        reason = f"{standby} is a former primary and is down: rejoining it under {primary}"
        actions.append(Rejoin(standby, primary, reason))

    code, reason = verdict.code, verdict.reason
    if changed_primary:
        code, reason = "primary_changed", f"{primary} is now the primary (was {memory.primary})"
    new = Memory(
        state=ClusterState.HEALTHY if verdict.eligible else ClusterState.DEGRADED,
        primary=primary,
        primary_down_since=None,
        standby_down_since=standby_down_since,
        standby_eligible=verdict.eligible,
        needs_rejoin=frozenset(needs_rejoin),
        timeline=obs.timeline,
        sync_watermark=verdict.watermark,
    )
    details: dict[str, object] = {
        "primary": primary,
        "standby": standby,
        "lag_bytes": link.lag,
        "eligible": verdict.eligible,
    }
    allowed = tuple(a for a in actions if _target(a) not in busy)
    return Decision(new, allowed, code, reason, details)


def _synchronous(link: _Link, relax_after: float) -> _Verdict:
    """Eligibility, and the synchronous setting to apply, in synchronous mode."""
    standby, replica = link.standby, link.replica
    if link.streaming and link.named and replica is not None and replica.sync_state == "sync":
        watermark = link.watermark if link.watermark is not None else link.primary_lsn
        flushed = replica.flush_lsn
        if watermark is not None and flushed is not None and flushed >= watermark:
            return _Verdict(
                True, "healthy", f"{standby} is the synchronous standby", None, watermark
            )
        return _Verdict(
            False,
            "sync_confirming",
            f"{standby} is synchronous; eligible once it has flushed {format_lsn(watermark)}",
            None,
            watermark,
        )
    if link.streaming and not link.named:
        if link.lag is not None and link.lag <= CAUGHT_UP_BYTES:
            return _Verdict(
                False,
                "enabling_sync",
                f"{standby} caught up: making it the synchronous standby",
                SetSynchronous(link.primary, standby, f"{standby} caught up"),
            )
        return _Verdict(False, "standby_catching_up", f"{standby} is catching up ({link.lag} B)")
    if link.streaming:
        return _Verdict(False, "standby_not_sync", f"{standby} streams but is not yet synchronous")
    if not link.named:
        return _Verdict(False, "standby_down", f"{standby} is not streaming and not synchronous")
    # Not streaming but still named: commits wait for it, so nothing acknowledged is missing on
    # it. It stays eligible until pghad relaxes synchronous replication.
    if link.down_for >= relax_after:
        return _Verdict(
            False,
            "relaxing_sync",
            f"{standby} has not streamed for {link.down_for:.1f} s: relaxing synchronous "
            "replication so the primary keeps taking writes; "
            f"{standby} is not eligible for promotion until it catches up",
            SetSynchronous(link.primary, None, f"{standby} down for {link.down_for:.1f} s"),
        )
    return _Verdict(
        link.was_eligible,
        "standby_missing",
        f"{standby} is not streaming ({link.down_for:.1f} s); commits wait for it until "
        f"{relax_after:g} s",
    )


def _asynchronous(link: _Link, max_lag: int, sync_names: str) -> _Verdict:
    action = SetSynchronous(link.primary, None, "synchronous mode is off") if sync_names else None
    if link.streaming and link.lag is not None and link.lag <= max_lag:
        return _Verdict(True, "healthy", f"{link.standby} streams, {link.lag} B behind", action)
    return _Verdict(
        False,
        "standby_lagging",
        f"{link.standby} is not streaming or lags more than {max_lag} bytes",
        action,
    )


def _without_primary(
    view: ClusterView, memory: Memory, config: Config, now: float, busy: frozenset[str]
) -> Decision:
    primary = memory.primary
    if primary is None:
        new = replace(memory, state=ClusterState.STARTING)
        reachable = [n for n, o in view.nodes.items() if o.reachable]
        return Decision(
            new,
            (),
            "no_primary_known",
            f"no writable node and no recorded primary (reachable: {reachable}); "
            "not promoting anything: promote by hand or restore the primary",
        )
    standby = config.other(primary).name
    since = memory.primary_down_since if memory.primary_down_since is not None else now
    down_for = now - since
    threshold = config.cluster.failover_threshold
    base = replace(memory, state=ClusterState.PRIMARY_DOWN, primary_down_since=since)
    error = view[primary].error or ("in recovery" if view[primary].is_standby else "down")
    details: dict[str, object] = {
        "primary": primary,
        "down_for_s": round(down_for, 3),
        "threshold_s": threshold,
        "error": error,
    }
    if down_for < threshold:
        return Decision(
            base,
            (),
            "primary_down",
            f"{primary} unreachable for {down_for:.1f} s of {threshold:g} s ({error})",
            details,
        )
    refusal = _refuse_promotion(view, memory, standby, busy)
    if refusal is not None:
        return Decision(base, (), refusal[0], refusal[1], details)
    reason = (
        f"{primary} unreachable for {down_for:.1f} s (threshold {threshold:g} s, {error}); "
        f"{standby} is eligible: promoting it"
    )
    new = replace(
        base, state=ClusterState.FAILING_OVER, needs_rejoin=memory.needs_rejoin | {primary}
    )
    return Decision(new, (Promote(standby, primary, reason),), "failover", reason, details)


def _refuse_promotion(
    view: ClusterView, memory: Memory, standby: str, busy: frozenset[str]
) -> tuple[str, str] | None:
    """The first reason not to promote `standby` now, as (code, reason), or None."""
    obs = view[standby]
    receiver_age = obs.receiver_msg_age_s or 0.0
    checks = (
        (standby in busy, "standby_busy", "an operation is running on it"),
        (not obs.reachable, "standby_unreachable", f"it is unreachable too ({obs.error})"),
        (not obs.is_standby, "standby_not_in_recovery", "it is not a standby"),
        (
            not memory.standby_eligible,
            "standby_ineligible",
            "it was not an eligible standby when the primary was last seen (not synchronous, "
            "lagging or not streaming), so it may lack acknowledged commits; use a forced "
            "failover to accept that risk",
        ),
        (
            obs.receiver_status == "streaming" and receiver_age < RECEIVER_SILENCE_S,
            "primary_alive_for_standby",
            f"it still receives WAL from the primary ({receiver_age:.1f} s ago), so the primary "
            "is alive and only unreachable from pghad",
        ),
    )
    for failed, code, why in checks:
        if failed:
            return code, f"not promoting {standby}: {why}"
    return None


def _target(action: Action) -> str:
    if isinstance(action, SetSynchronous):
        return action.primary
    return action.node
