"""Persist the decision memory, so a restarted daemon still knows who was primary and eligible."""

from __future__ import annotations

import json
from pathlib import Path

from pghad.decide.model import ClusterState, Memory
from pghad.decide.promotions import Promotion
from pghad.system.state_store import read_json, write_atomic

STATE_FILE = "state.json"


def load_memory(state_dir: Path, node_names: set[str]) -> Memory:
    """Only what cannot be observed is taken: who was primary, whether the standby was eligible,
    who must rejoin, and a promotion ordered but not seen to settle.

    Timers start afresh: a restarted daemon waits a full threshold before promoting.
    """
    data = read_json(state_dir / STATE_FILE)
    if data is None or data.get("primary") not in node_names:
        return Memory()
    return Memory(
        state=ClusterState.STARTING,
        primary=data["primary"],
        standby_eligible=bool(data.get("standby_eligible", False)),
        needs_rejoin=frozenset(n for n in data.get("needs_rejoin", []) if n in node_names),
        timeline=data.get("timeline"),
        promoting=data["promoting"] if data.get("promoting") in node_names else None,
        fence_timing=tuple(
            sorted(
                (name, float(seconds))
                for name, seconds in (data.get("fence_timing") or {}).items()
                if name in node_names and isinstance(seconds, int | float)
            )
        ),
    )


def save_memory(
    state_dir: Path, memory: Memory, history: list[Promotion], paused: bool = False
) -> None:
    data = {
        "paused": paused,
        "primary": memory.primary,
        "state": memory.state.value,
        "standby_eligible": memory.standby_eligible,
        "needs_rejoin": sorted(memory.needs_rejoin),
        "timeline": memory.timeline,
        "promoting": memory.promoting,
        "fence_timing": dict(memory.fence_timing),
        "failovers": [promotion.to_json() for promotion in history[-50:]],
    }
    write_atomic(state_dir / STATE_FILE, json.dumps(data, indent=2, default=str) + "\n")


def load_paused(state_dir: Path) -> bool:
    """Maintenance mode survives a restart."""
    return bool((read_json(state_dir / STATE_FILE) or {}).get("paused", False))


def load_history(state_dir: Path) -> list[Promotion]:
    data = read_json(state_dir / STATE_FILE) or {}
    entries = data.get("failovers", [])
    history = [Promotion.from_json(e) for e in entries if isinstance(e, dict)]
    return [promotion for promotion in history if promotion is not None]
