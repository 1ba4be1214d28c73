"""Bringing back a node whose server is down: rejoin a former primary, start a standby, or
start the primary itself when no standby can take its place."""

from __future__ import annotations

from pghad.config.model import Config
from pghad.decide.model import Action, Memory, Rejoin, StartPrimary, StartStandby
from pghad.decide.observation import ClusterView, NodeObservation, ServerState


def repair_standby(
    obs: NodeObservation, primary: str, former_primary: bool, config: Config
) -> tuple[str, str, Action | None] | None:
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
        return (
            "rejoin_waiting",
            f"{node} is a former primary but its server is {obs.server.value} and does not "
            "answer: not rejoining a node pghad cannot observe",
            None,
        )
    rebuild = (
        " (its data directory is gone: a fresh copy)" if obs.server is ServerState.NO_DATA else ""
    )
    if former_primary:
        reason = f"{node} is a former primary and is down: rejoining it under {primary}{rebuild}"
        return "rejoining", reason, Rejoin(node, primary, reason)
    reason = f"the standby {node} is down: starting it under {primary}{rebuild}"
    return "starting_standby", reason, StartStandby(node, primary, reason)


# Refusals to promote that leave the recorded primary as the only node that may take writes.
NO_OTHER_PRIMARY = ("standby_unreachable", "standby_ineligible", "standby_witness_unknown")


def superseded(memory: Memory, primary: str, standby: str, view: ClusterView) -> str | None:
    """Why `primary` may have been superseded by `standby` (then it is never started as a
    primary), or None when the evidence says the standby is not a primary."""
    if view[standby].server is ServerState.NO_DATA:
        return None  # whatever it was, it holds nothing now: `primary` is the only copy
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
    refusal: tuple[str, str],
    config: Config,
) -> tuple[str, str, Action | None] | None:
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
        return "starting_standby", reason, StartStandby(standby, primary, reason)
    if obs.reachable or obs.server is not ServerState.STOPPED:
        return None
    doubt = superseded(memory, primary, standby, view)
    if doubt is not None:
        reason = f"{why}; not starting {primary} as the primary: {doubt}"
        return "primary_superseded", reason, None
    reason = f"{why}; {primary}'s server is stopped: starting it again as the primary"
    return "restarting_primary", reason, StartPrimary(primary, reason)


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
