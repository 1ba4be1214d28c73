"""Bringing back a node whose server is down: rejoin a former primary, start a standby, or
start the primary itself when no standby can take its place."""

from __future__ import annotations

from typing import NamedTuple

from pghad.config.model import Config
from pghad.decide.codes import DecisionCode
from pghad.decide.model import Action, Memory, Rejoin, StartPrimary, StartStandby
from pghad.decide.observation import ClusterView, ControlData, NodeObservation, ServerState
from pghad.decide.policy import Refusal


class Repair(NamedTuple):
    """What a round does about a node whose server is down; `action` None: nothing yet."""

    code: DecisionCode
    reason: str
    action: Action | None


class Evidence(NamedTuple):
    """What two stopped servers' pg_control says: the newest primary (None: no single one)."""

    newest: str | None
    seen: str


def repair_standby(
    obs: NodeObservation, primary: str, former_primary: bool, config: Config
) -> Repair | None:
    """Bring back a standby that is not running: rejoin a former primary, start a plain one.

    Only a node whose driver says its server is down is touched: a node pghad cannot observe
    (unreachable host, driver timeout) or that runs without answering is left alone.
    """
    node = obs.name
    if obs.reachable or not config.cluster.auto_rejoin:
        return None
    if not obs.known_down:
        if not former_primary:
            return None
        return Repair(
            DecisionCode.REJOIN_WAITING,
            f"{node} is a former primary but its server is {obs.server.value} and does not "
            "answer: not rejoining a node pghad cannot observe",
            None,
        )
    rebuild = (
        " (its data directory is gone: a fresh copy)" if obs.server is ServerState.NO_DATA else ""
    )
    if former_primary:
        reason = f"{node} is a former primary and is down: rejoining it under {primary}{rebuild}"
        return Repair(DecisionCode.REJOINING, reason, Rejoin(node, primary, reason))
    reason = f"the standby {node} is down: starting it under {primary}{rebuild}"
    return Repair(DecisionCode.STARTING_STANDBY, reason, StartStandby(node, primary, reason))


# Refusals to promote that leave the recorded primary as the only node that may take writes.
NO_OTHER_PRIMARY = (
    DecisionCode.STANDBY_UNREACHABLE,
    DecisionCode.STANDBY_INELIGIBLE,
    DecisionCode.STANDBY_WITNESS_UNKNOWN,
)


def stopped_control(obs: NodeObservation) -> ControlData | None:
    """The pg_control evidence of a node whose server its driver says is stopped."""
    if obs.reachable or obs.server is not ServerState.STOPPED:
        return None
    return obs.control


def newest_stopped_primary(view: ClusterView, primary: str, standby: str) -> Evidence | None:
    """When both servers are stopped and both pg_control files were read: the node that stopped
    as a primary on the newest timeline (None when none did, or two did on one timeline), with
    the evidence; None when there is not that much evidence (then memory decides, cautiously).
    A node that stopped in recovery was a standby: it is no newer primary, however it stopped."""
    controls = {n: stopped_control(view[n]) for n in (primary, standby)}
    if any(c is None or c.timeline is None for c in controls.values()):
        return None
    seen = ", ".join(f"{n}: {c.state} on timeline {c.timeline}" for n, c in controls.items() if c)
    primaries = sorted(
        ((c.timeline or 0, n) for n, c in controls.items() if c is not None and c.was_primary),
        reverse=True,
    )
    newest = max(c.timeline or 0 for c in controls.values() if c is not None)
    if not primaries or primaries[0][0] < newest:
        return Evidence(None, f"pg_control shows no primary on the newest timeline ({seen})")
    if len(primaries) == 2 and primaries[0][0] == primaries[1][0]:
        return Evidence(
            None, f"pg_control shows both stopped as primaries on one timeline ({seen})"
        )
    return Evidence(primaries[0][1], f"pg_control: {seen}")


def superseded(memory: Memory, primary: str, standby: str, view: ClusterView) -> str | None:
    """Why `primary` may have been superseded by `standby` (then it is never started as a
    primary), or None when the evidence says the standby is not a primary."""
    if view[standby].server is ServerState.NO_DATA:
        return None  # whatever it was, it holds nothing now: `primary` is the only copy
    evidence = newest_stopped_primary(view, primary, standby)
    if evidence is not None:  # both servers' own word: it settles what memory cannot
        return None if evidence.newest == primary else evidence.seen
    if memory.promoting is not None:
        return f"a promotion of {memory.promoting} was ordered and is not settled"
    if primary in memory.needs_rejoin:
        return f"{primary} is a former primary awaiting its rejoin"
    if view[standby].is_standby or standby in memory.seen_in_recovery:
        return None
    return (
        f"this daemon has not seen {standby} as a standby since it started, so {standby} "
        "may be a newer primary"
    )


def restart_primary(
    view: ClusterView,
    memory: Memory,
    *,
    primary: str,
    standby: str,
    refusal: Refusal,
    config: Config,
) -> Repair | None:
    """Start the primary again when its driver says the server is stopped (killed, crashed,
    fenced by its agent) and the standby may not be promoted: otherwise nothing takes writes.
    When the primary's data is gone instead, a stopped standby is started, to be promoted.
    A primary pghad cannot observe, or whose data directory is gone, is left alone, and so is one
    that may have been superseded (then: code `primary_superseded`, no action)."""
    code, why = refusal
    obs = view[primary]
    if code not in NO_OTHER_PRIMARY or not config.cluster.auto_rejoin:
        return None
    if obs.server is ServerState.NO_DATA and view[standby].server is ServerState.STOPPED:
        # The primary's data is gone: the stopped standby is started (in recovery), so that it
        # may be promoted once eligible, instead of the cluster staying without a primary.
        reason = f"{why}; {primary} has no data: starting the standby {standby} to take over"
        return Repair(DecisionCode.STARTING_STANDBY, reason, StartStandby(standby, primary, reason))
    if obs.reachable or obs.server is not ServerState.STOPPED:
        return None
    evidence = newest_stopped_primary(view, primary, standby)
    if evidence is not None and evidence.newest == standby:
        reason = (
            f"{why}; {standby} stopped as the primary on the newest timeline ({evidence.seen}): "
            f"starting {standby} as the primary, not {primary}"
        )
        return Repair(DecisionCode.STARTING_NEWEST_PRIMARY, reason, StartPrimary(standby, reason))
    doubt = superseded(memory, primary, standby, view)
    if doubt is not None:
        reason = f"{why}; not starting {primary} as the primary: {doubt}"
        return Repair(DecisionCode.PRIMARY_SUPERSEDED, reason, None)
    reason = f"{why}; {primary}'s server is stopped: starting it again as the primary"
    return Repair(DecisionCode.RESTARTING_PRIMARY, reason, StartPrimary(primary, reason))


def restart_self_fenced(
    view: ClusterView, memory: Memory, primary: str, standby: str, config: Config
) -> StartPrimary | None:
    """A primary that fenced itself while cut off, whose agent answers again: the fence was a
    precaution, so it is started again at once. Either the recorded primary, when no promotion
    happened (a cut shorter than the threshold must not end in a failover), or the node whose
    promotion was ordered and took effect (it was writable when it fenced itself) while the old
    primary awaits its rejoin: otherwise nothing would ever take writes again."""
    if not config.cluster.auto_rejoin:
        return None
    promoted = memory.promoting
    if promoted is not None and promoted != primary and _self_fenced(view, promoted):
        if primary not in memory.needs_rejoin:
            return None
        return StartPrimary(
            promoted,
            f"{promoted} was promoted, then fenced itself while cut off, and its host answers "
            f"again; {primary} awaits its rejoin: starting {promoted} again as the primary",
        )
    if not _self_fenced(view, primary) or superseded(memory, primary, standby, view) is not None:
        return None
    return StartPrimary(
        primary,
        f"{primary} fenced itself while cut off and its host answers again; {standby} was "
        "not promoted: starting it again as the primary",
    )


def _self_fenced(view: ClusterView, node: str) -> bool:
    obs = view[node]
    witness = obs.witness
    return (
        witness is not None
        and witness.available
        and witness.self_fenced
        and not obs.reachable
        and obs.server is ServerState.STOPPED
    )
