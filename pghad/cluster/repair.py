"""Bringing back a node whose server is down: rejoin a former primary, start a standby, or
start the primary itself when no standby can take its place."""

from __future__ import annotations

from pghad.config import Config

from .model import Action, Rejoin, StartPrimary, StartStandby
from .observation import NodeObservation, ServerState


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


def restart_primary(
    obs: NodeObservation, refusal: tuple[str, str], config: Config
) -> tuple[str, StartPrimary] | None:
    """Start the primary again when its driver says the server is stopped (killed, crashed,
    fenced by its agent) and the standby may not be promoted: otherwise nothing takes writes.
    A primary pghad cannot observe, or whose data directory is gone, is left alone."""
    code, why = refusal
    if code not in NO_OTHER_PRIMARY or not config.cluster.auto_rejoin:
        return None
    if obs.reachable or obs.server is not ServerState.STOPPED:
        return None
    reason = f"{why}; {obs.name}'s server is stopped: starting it again as the primary"
    return reason, StartPrimary(obs.name, reason)
