"""The status document GET /status answers and `pghad status` prints, from the last snapshot."""

from __future__ import annotations

from typing import Any

from pghad.config.model import Config
from pghad.decide.model import Decision, Memory
from pghad.decide.observation import ClusterView, format_lsn
from pghad.decide.promotions import Promotion


def node_status(
    config: Config, memory: Memory, view: ClusterView, lagging: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    nodes = []
    for node in config.nodes:
        obs = view.nodes.get(node.name)
        reachable = bool(obs and obs.reachable)
        if not reachable:
            role = "fenced" if node.name in memory.needs_rejoin else "down"
        else:
            role = "standby" if obs and obs.in_recovery else "primary"
        entry: dict[str, Any] = {
            "name": node.name,
            "address": node.address,
            "role": role,
            "reachable": reachable,
            "lag_alert": node.name in lagging,
        }
        if obs is not None and reachable:
            primary = memory.primary if memory.primary in view.nodes else None
            replica = view[primary].replica(node.name) if primary else None
            lag = view.lag_bytes(primary, node.name) if primary else None
            entry.update(
                timeline=obs.timeline,
                current_lsn=format_lsn(obs.current_lsn),
                receive_lsn=format_lsn(obs.receive_lsn),
                replay_lsn=format_lsn(obs.replay_lsn),
                replay_lag_s=obs.replay_lag_s if obs.in_recovery else None,
                replay_lag_bytes=lag if obs.in_recovery else None,
                sync_state=replica.sync_state if replica else None,
            )
        elif obs is not None:
            entry["error"] = obs.error
            entry["server"] = obs.server.value
        nodes.append(entry)
    return nodes


def status_body(
    *,
    config: Config,
    memory: Memory,
    view: ClusterView,
    decision: Decision | None,
    operation: str | None,
    history: list[Promotion],
    paused: bool = False,
    lagging: frozenset[str] = frozenset(),
    archive: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "status": "success",
        "cluster": config.cluster.name,
        # At once, even while the standby still counts as eligible (sync_relax_after).
        "standby_streaming": view.standby_streaming(memory.primary),
        "state": memory.state.value,
        "primary": memory.primary,
        "preferred_primary": config.preferred_primary,
        "standby_eligible": memory.standby_eligible,
        "paused": paused,
        "decision": {"code": decision.code, "reason": decision.reason} if decision else None,
        "operation": operation,
        "last_failover": history[-1].to_json() if history else None,
        "nodes": node_status(config, memory, view, lagging),
        "archive": archive,
    }
