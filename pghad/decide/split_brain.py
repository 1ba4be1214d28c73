"""Two writable nodes, or one that was superseded: which one keeps serving is settled by what the
servers say (timelines, WAL, pg_control), and by what the daemon recorded of a promotion."""

from __future__ import annotations

from dataclasses import replace

from pghad.decide.codes import DecisionCode
from pghad.decide.model import Action, ClusterState, Decision, Fence, Memory
from pghad.decide.observation import ClusterView, ServerState, format_lsn


def settle(view: ClusterView, memory: Memory, now: float) -> Decision:
    """Keep the node on the newer timeline; on one timeline, the one that has written further
    (it holds every commit the other could have acknowledged before they parted, and more).
    Remembered names decide nothing: a state file may be older than the cluster."""
    first, second = view.writable()
    a, b = view[first], view[second]
    if (a.timeline or 0) != (b.timeline or 0):
        keep = first if (a.timeline or 0) > (b.timeline or 0) else second
        why = "the newer timeline"
    elif a.current_lsn is not None and b.current_lsn is not None and a.current_lsn != b.current_lsn:
        keep = first if a.current_lsn > b.current_lsn else second
        why = f"the same timeline, further WAL ({format_lsn(view[keep].current_lsn)})"
    else:
        new = replace(
            memory, state=ClusterState.SPLIT_BRAIN, primary_seen_at=now, primary_down_since=None
        )
        return Decision(
            new,
            (),
            DecisionCode.SPLIT_BRAIN_UNRESOLVED,
            "two writable nodes on the same timeline at the same WAL position: "
            "fence one by hand (pghad will not guess)",
        )
    stale = second if keep == first else first
    reason = f"{stale} is writable while {keep} is primary ({why}): fencing {stale}"
    return _fence(memory, keep, stale, now, reason)


def _fence(memory: Memory, keep: str, stale: str, now: float, reason: str) -> Decision:
    """Fence `stale`, keep `keep` as the primary. Never held behind a running operation."""
    new = replace(
        memory,
        state=ClusterState.SPLIT_BRAIN,
        primary=keep,
        needs_rejoin=memory.needs_rejoin | {stale},
        standby_eligible=False,
        primary_down_since=None,
        primary_seen_at=now,
    )
    actions: tuple[Action, ...] = (Fence(stale, reason),)
    return Decision(
        new, actions, DecisionCode.SPLIT_BRAIN_FENCE, reason, {"keep": keep, "fence": stale}
    )


def superseded_by_stopped(
    view: ClusterView, memory: Memory, now: float, primary: str, standby: str
) -> Decision | None:
    """The one writable node is on an older timeline than the other's pg_control shows it
    stopped on as a primary: that node was promoted past this one (a promotion this daemon's
    memory may not know: a state file older than the cluster), and may hold acknowledged
    commits this one lacks. It is settled as a split brain: the older one is fenced (then both
    are stopped, and pg_control's evidence starts the newest primary). Starting the other as a
    standby under the older primary would throw its commits away."""
    other = view[standby]
    control = other.control
    mine = view[primary].timeline
    if (
        other.reachable
        or other.server is not ServerState.STOPPED
        or control is None
        or not control.was_primary
        or control.timeline is None
        or mine is None
        or control.timeline <= mine
    ):
        return None
    reason = (
        f"{primary} is writable on timeline {mine} while {standby}'s pg_control shows it stopped "
        f"as a primary on timeline {control.timeline} ({control.state}): fencing {primary}"
    )
    return _fence(memory, standby, primary, now, reason)


def superseded_by_memory(
    view: ClusterView, memory: Memory, now: float, node: str
) -> Decision | None:
    """The one writable node is a former primary on an older timeline than the primary that
    replaced it (never fenced: its host did not answer at the promotion). It holds none of
    that primary's acknowledged commits: it is fenced, never taken as the primary, and the
    newest primary is never rewound under it."""
    timeline = view[node].timeline
    if (
        node == memory.primary
        or node not in memory.needs_rejoin
        or memory.timeline is None
        or timeline is None
        or timeline >= memory.timeline
    ):
        return None
    reason = (
        f"{node} is writable on timeline {timeline}, older than the timeline "
        f"{memory.timeline} of {memory.primary}, which replaced it: fencing {node}"
    )
    details: dict[str, object] = {"fence": node, "primary": memory.primary}
    down = replace(
        memory,
        state=ClusterState.PRIMARY_DOWN,
        primary_down_since=memory.primary_down_since or now,
    )
    return Decision(down, (Fence(node, reason),), DecisionCode.STALE_PRIMARY_FENCE, reason, details)
