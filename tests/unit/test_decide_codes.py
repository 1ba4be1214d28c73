"""One row per decision code: what the daemon decides, and that docs/state-machine.md says so.

DECISION_CODES, this table and the documented table are checked against each other, so a new
code cannot be added without a test row and a line in the documentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pghad.decide.decide import DECISION_CODES, decide
from pghad.decide.model import (
    ClusterState,
    Fence,
    Memory,
    Promote,
    Rejoin,
    SetSynchronous,
    StartPrimary,
    StartStandby,
)
from pghad.decide.observation import ClusterView, NodeObservation, ServerState, Witness

from .test_decide import HEALTHY, config, down, primary, standby, stopped, view

DOCS = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
UNSEEN = ServerState.UNKNOWN
DOWN_PAST = replace(HEALTHY, state=ClusterState.PRIMARY_DOWN, primary_down_since=0.0)
AFTER_FAILOVER = Memory(primary="a", needs_rejoin=frozenset({"b"}))


@dataclass(frozen=True)
class Row:
    cluster: ClusterView
    memory: Memory
    actions: tuple[type, ...] = ()
    now: float = 0.0
    sync: bool = True
    busy: frozenset[str] = frozenset()
    paused: bool = False


ROWS = {
    "healthy": Row(view(primary(), standby()), Memory(primary="a")),
    "enabling_sync": Row(
        view(primary(named=False, sync_state="async"), standby()), Memory(), (SetSynchronous,)
    ),
    "sync_confirming": Row(view(primary(lsn=5000, flush=4000), standby()), Memory(primary="a")),
    "standby_catching_up": Row(
        view(primary(named=False, sync_state="async", lsn=10**10, flush=1), standby()), HEALTHY
    ),
    "standby_not_sync": Row(view(primary(sync_state="potential"), standby()), HEALTHY),
    "standby_missing": Row(view(primary(streaming=False), down("b", UNSEEN)), HEALTHY),
    "relaxing_sync": Row(
        view(primary(streaming=False), down("b", UNSEEN)),
        replace(HEALTHY, standby_down_since=0.0),
        (SetSynchronous,),
        now=5.0,
    ),
    "standby_down": Row(view(primary(streaming=False, named=False), down("b", UNSEEN)), HEALTHY),
    "standby_lagging": Row(
        view(primary(named=False, sync_state="async", lsn=10**9, flush=1), standby()),
        Memory(),
        sync=False,
    ),
    "primary_changed": Row(
        view(primary(streaming=False, named=False), down("b", UNSEEN)), Memory(primary="b")
    ),
    "rejoining": Row(
        view(primary(streaming=False, named=False), down("b")), AFTER_FAILOVER, (Rejoin,)
    ),
    "rejoin_waiting": Row(
        view(primary(streaming=False, named=False), down("b", ServerState.RUNNING)),
        AFTER_FAILOVER,
    ),
    "starting_standby": Row(
        view(primary(streaming=False, named=False), down("b")), HEALTHY, (StartStandby,)
    ),
    "primary_down": Row(view(down("a"), standby()), HEALTHY, now=1.0),
    "failover": Row(view(down("a"), standby()), DOWN_PAST, (Promote,), now=50.0),
    "paused": Row(view(down("a"), standby()), DOWN_PAST, now=50.0, paused=True),
    "standby_busy": Row(
        view(down("a"), standby()), DOWN_PAST, now=50.0, busy=frozenset({"a", "b"})
    ),
    "standby_unreachable": Row(view(down("a", UNSEEN), down("b")), DOWN_PAST, now=50.0),
    "restarting_primary": Row(
        view(down("a"), down("b")),
        replace(DOWN_PAST, seen_in_recovery=frozenset({"b"})),
        (StartPrimary,),
        now=50.0,
    ),
    "primary_superseded": Row(view(down("a"), down("b")), DOWN_PAST, now=50.0),
    "starting_newest_primary": Row(
        view(stopped("a", "in production", 1), stopped("b", "shut down", 2)),
        DOWN_PAST,
        (StartPrimary,),
        now=50.0,
    ),
    "primary_running": Row(view(down("a", ServerState.RUNNING), standby()), DOWN_PAST, now=50.0),
    "standby_not_in_recovery": Row(
        view(down("a"), NodeObservation("b", True)), DOWN_PAST, now=50.0
    ),
    "standby_ineligible": Row(
        view(down("a", UNSEEN), standby()), replace(DOWN_PAST, standby_eligible=False), now=50.0
    ),
    "primary_alive_for_standby": Row(
        view(down("a"), standby(receiver="streaming", age=0.2)), DOWN_PAST, now=50.0
    ),
    "standby_witness_unknown": Row(
        view(down("a", UNSEEN), standby(witness=Witness(False, None))), DOWN_PAST, now=50.0
    ),
    "stale_primary_fence": Row(
        view(primary("a", "b", streaming=False, tl=1), down("b")),
        Memory(primary="b", needs_rejoin=frozenset({"a"}), timeline=2),
        (Fence,),
    ),
    "split_brain_fence": Row(
        view(primary("a", "b", tl=1), primary("b", "a", tl=2)), HEALTHY, (Fence,)
    ),
    "split_brain_unresolved": Row(view(primary("a", "b"), primary("b", "a")), Memory()),
    "no_primary_known": Row(view(standby("a"), standby("b")), Memory()),
}


@pytest.mark.parametrize("code", DECISION_CODES)
def test_every_decision_code_has_a_row_that_produces_it(code: str) -> None:
    row = ROWS[code]
    decision = decide(
        row.cluster,
        row.memory,
        config(threshold=10, sync=row.sync),
        row.now,
        row.busy,
        paused=row.paused,
    )
    assert decision.code == code, decision.reason
    assert tuple(type(a) for a in decision.actions) == row.actions
    assert decision.memory.state is documented_states()[code]


def documented_states() -> dict[str, ClusterState]:
    """code -> the state the documented table gives it (`HEALTHY*`: see its footnote)."""
    states = {}
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `"):
            cells = line.split("|")
            state = ClusterState[cells[2].strip().rstrip("*")]
            states.update(dict.fromkeys(re.findall(r"`([a-z_]+)`", cells[1]), state))
    return states


def documented_codes() -> set[str]:
    return set(documented_states())


def test_the_table_the_code_and_the_documentation_list_the_same_codes() -> None:
    assert set(ROWS) == set(DECISION_CODES)
    assert documented_codes() == set(DECISION_CODES)
