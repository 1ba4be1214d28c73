"""Two writable nodes: which one keeps serving is settled by what the servers say."""

from __future__ import annotations

from dataclasses import replace

from pghad.decide.codes import DecisionCode
from pghad.decide.model import Action, ClusterState, Decision, Fence, Memory
from pghad.decide.observation import ClusterView, format_lsn


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
    new = replace(
        memory,
        state=ClusterState.SPLIT_BRAIN,
        primary=keep,
        needs_rejoin=memory.needs_rejoin | {stale},
        standby_eligible=False,
        primary_down_since=None,
        primary_seen_at=now,
    )
    reason = f"{stale} is writable while {keep} is primary ({why}): fencing {stale}"
    # Fencing a split brain is never held behind a running operation.
    actions: tuple[Action, ...] = (Fence(stale, reason),)
    return Decision(
        new, actions, DecisionCode.SPLIT_BRAIN_FENCE, reason, {"keep": keep, "fence": stale}
    )
