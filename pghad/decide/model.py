"""What the decision function reads and returns: states, actions, memory, decisions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pghad.decide.codes import DecisionCode


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
    # False when the old primary's host does not answer: it has fenced itself by the timing
    # model (its agent's self-fence comes before the threshold), so the promotion does not wait.
    wait_for_fence: bool = True


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
class StartStandby:
    """Start a standby whose server is down (rebuilt by a clone when its data is gone)."""

    node: str
    primary: str
    reason: str


@dataclass(frozen=True)
class StartPrimary:
    """Start the recorded primary again: its server is stopped and no standby can take over."""

    node: str
    reason: str


@dataclass(frozen=True)
class SetSynchronous:
    primary: str
    standby: str | None
    reason: str
    archive: bool = False  # commits also wait for the WAL archive
    relax: bool = False  # it drops a member commits wait for now: a safety action


Action = Promote | Fence | Rejoin | StartStandby | StartPrimary | SetSynchronous


def action_target(action: Action) -> str:
    if isinstance(action, SetSynchronous):
        return action.primary
    return action.node


def action_name(action: Action) -> str:
    return {
        Promote: "promote",
        Fence: "fence",
        Rejoin: "rejoin",
        StartStandby: "start_standby",
        StartPrimary: "start_primary",
        SetSynchronous: "set_synchronous",
    }[type(action)]


def is_safety_action(action: Action) -> bool:
    """Actions never held behind a running operation: relaxing synchronous replication (the
    primary's writes wait on it) and fencing a split brain."""
    if isinstance(action, SetSynchronous):
        return action.relax
    return isinstance(action, Fence)


def action_key(action: Action) -> str:
    """What backoff is counted by: the kind of action and the node it acts on."""
    return f"{action_name(action)}:{action_target(action)}"


@dataclass(frozen=True)
class Memory:
    """What the daemon carries between rounds (and persists, see memory_file)."""

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
    archive_down_since: float | None = None  # a synchronous archive not streaming since
    # The standby's flushed position last round, when that round was, and since when the
    # position has not moved (it reached it after the round before): a frozen or cut-off standby
    # is seen long before wal_sender_timeout says so.
    standby_flush: int | None = None
    standby_seen_at: float | None = None
    standby_progress_at: float | None = None
    # When the primary last answered as a writable primary: the threshold counts from there
    # (from start-up when this daemon has not seen it), not from the first failed probe.
    primary_seen_at: float | None = None
    # A promotion ordered (by any path) and not yet seen to have taken effect or to have been
    # abandoned: that node's role is uncertain, so the old primary is never started as primary.
    promoting: str | None = None
    # Nodes this daemon process has itself seen in recovery and not promoted since: evidence
    # (not memory from a file) that a node pghad cannot reach now is not a primary.
    seen_in_recovery: frozenset[str] = frozenset()
    # The self-fence timing each node's agent last confirmed, as (node, seconds): an agent cut
    # off fences on that timing, so a lowered threshold waits for it, across restarts too.
    fence_timing: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Decision:
    memory: Memory
    actions: tuple[Action, ...]
    code: DecisionCode
    reason: str
    details: dict[str, object] = field(default_factory=dict)
