"""What a finished action or operation makes true: pure functions of memory and result."""

from __future__ import annotations

from dataclasses import replace

from pghad.decide.model import ClusterState, Memory


def promotion_intended(memory: Memory, new: str, old: str | None) -> Memory:
    """Written to disk before any promotion (automatic, API, trigger, switchover, failback):
    from here on `old` may have been superseded, so it is never started as a primary again
    before it has rejoined, even by a daemon restarted from this file."""
    needs_rejoin = memory.needs_rejoin | {old} if old else memory.needs_rejoin
    # Eligibility is left as it was: a daemon restarted before the promotion finishes what the
    # operation began (promotes the same standby) when it may, and otherwise waits.
    return replace(
        memory,
        needs_rejoin=needs_rejoin - {new},
        promoting=new,
        seen_in_recovery=memory.seen_in_recovery - {new},
    )


def new_primary(memory: Memory, new: str, old: str | None) -> Memory:
    """A promotion happened: `new` is primary and `old` must rejoin before it serves again."""
    needs_rejoin = (memory.needs_rejoin | {old}) - {new} if old else memory.needs_rejoin - {new}
    return Memory(
        state=ClusterState.FAILING_OVER,
        primary=new,
        needs_rejoin=needs_rejoin,
        seen_in_recovery=memory.seen_in_recovery - {new},
        fence_timing=memory.fence_timing,
    )


def promotion_failed(memory: Memory) -> Memory:
    """The promote did not finish: the standby still holds every commit the primary acknowledged,
    so it stays eligible and the next round may try again (after backoff). `pg_promote` may yet
    take effect late, so the promotion stays unsettled: the old primary is not started again as
    a primary until the standby is seen streaming from it or as the primary."""
    return replace(memory, state=ClusterState.PRIMARY_DOWN, standby_eligible=True)
