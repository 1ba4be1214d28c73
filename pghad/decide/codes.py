"""Decision codes: one per thing a round can decide, each a row of docs/state-machine.md's table
(tests/unit/test_decide_codes.py keeps the three equal)."""

from __future__ import annotations

from enum import StrEnum


class DecisionCode(StrEnum):
    HEALTHY = "healthy"
    ENABLING_SYNC = "enabling_sync"
    SYNC_CONFIRMING = "sync_confirming"
    STANDBY_CATCHING_UP = "standby_catching_up"
    STANDBY_NOT_SYNC = "standby_not_sync"
    STANDBY_MISSING = "standby_missing"
    RELAXING_SYNC = "relaxing_sync"
    STANDBY_DOWN = "standby_down"
    STANDBY_LAGGING = "standby_lagging"
    PRIMARY_CHANGED = "primary_changed"
    REJOINING = "rejoining"
    REJOIN_WAITING = "rejoin_waiting"
    STARTING_STANDBY = "starting_standby"
    PRIMARY_DOWN = "primary_down"
    FAILOVER = "failover"
    RESTARTING_PRIMARY = "restarting_primary"
    PRIMARY_SUPERSEDED = "primary_superseded"
    STARTING_NEWEST_PRIMARY = "starting_newest_primary"
    PRIMARY_RUNNING = "primary_running"
    PAUSED = "paused"
    STANDBY_BUSY = "standby_busy"
    STANDBY_UNREACHABLE = "standby_unreachable"
    STANDBY_NOT_IN_RECOVERY = "standby_not_in_recovery"
    STANDBY_INELIGIBLE = "standby_ineligible"
    PRIMARY_ALIVE_FOR_STANDBY = "primary_alive_for_standby"
    STANDBY_WITNESS_UNKNOWN = "standby_witness_unknown"
    STALE_PRIMARY_FENCE = "stale_primary_fence"
    SPLIT_BRAIN_FENCE = "split_brain_fence"
    SPLIT_BRAIN_UNRESOLVED = "split_brain_unresolved"
    NO_PRIMARY_KNOWN = "no_primary_known"
