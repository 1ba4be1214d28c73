"""What a finished action or operation makes true: pure functions of memory and result."""

from __future__ import annotations

from dataclasses import replace

from .model import ClusterState, Memory


def new_primary(memory: Memory, new: str, old: str | None) -> Memory:
    """A promotion happened: `new` is primary and `old` must rejoin before it serves again."""
    needs_rejoin = (memory.needs_rejoin | {old}) - {new} if old else memory.needs_rejoin - {new}
    return Memory(state=ClusterState.FAILING_OVER, primary=new, needs_rejoin=needs_rejoin)


def promotion_failed(memory: Memory) -> Memory:
    """The promote failed before the standby left recovery: it still holds every commit the
    primary acknowledged, so it stays eligible and the next round may try again (after backoff).
    """
    return replace(memory, state=ClusterState.PRIMARY_DOWN, standby_eligible=True)
