"""The agent's fencing rules over what its watches heard: pure functions of the answers and the
time, shared by the agent and the simulation that runs it."""

from __future__ import annotations

from typing import Any

from pghad.agent.watch import Answer

ISOLATED = "it has heard neither the daemon nor the other node's host"
SUPERSEDED = "the other node is a primary on a newer timeline"


def should_self_fence(
    writable: bool, daemon_silent: float | None, peer_silent: float | None, after: float
) -> bool:
    """A primary that has lost both the daemon and its standby's host for `after` seconds stops
    taking writes; losing only one of them never fences. Silence counts from the last word, or
    from the agent's start when there was none."""
    return (
        writable
        and daemon_silent is not None
        and daemon_silent >= after
        and peer_silent is not None
        and peer_silent >= after
    )


def heartbeat_chance(probe_interval: float) -> float:
    """How long a restarted agent waits to hear the daemon's next heartbeat (one a round)."""
    return probe_interval + 1.0


def daemon_silence(renewed_at: float | None, started_at: float, now: float, chance: float) -> float:
    """The daemon's silence: from its last heartbeat, or from the agent's start when there was
    none. A heartbeat from before this start (the contact file) counts once the agent has had
    `chance` seconds to hear the next one: an agent restarted while cut off fences on the
    silence that began before it, but one restarted after a long stop of its own first listens
    (the daemon may well be there)."""
    if renewed_at is None or (renewed_at < started_at and now - started_at < chance):
        return now - started_at
    return now - renewed_at


def superseded_by_peer(own: dict[str, Any] | None, peer: dict[str, Any] | None) -> bool:
    """This server and the peer's are both primaries and the peer's timeline is newer: the
    peer was promoted past this one, which must stop taking writes (the daemon may be cut off
    and unable to fence it)."""
    if own is None or peer is None or own["in_recovery"] or peer["in_recovery"]:
        return False
    mine, theirs = own.get("timeline"), peer.get("timeline")
    return mine is not None and theirs is not None and theirs > mine


def peer_silence(server: Answer, agent: Answer | None, now: float, interval: float) -> float | None:
    """Silence of the peer's host: neither its server nor its agent (vouching that it reaches
    this node's server) has answered for that long; None while one answers."""
    silent = server.silent_for(now, interval)
    if agent is not None and silent is not None:
        vouched = agent.silent_for(now, interval)
        silent = None if vouched is None else min(silent, vouched)
    return silent


def fence_reason(
    own: Answer,
    peer: Answer,
    *,
    daemon_silent: float,
    peer_silent: float | None,
    after: float,
    now: float,
    interval: float,
) -> str | None:
    """Why a writable primary must stop now (SUPERSEDED or ISOLATED), or None."""
    timely = peer.error is None and peer.silent_for(now, interval) is None
    if timely and superseded_by_peer(own.row, peer.row):
        return SUPERSEDED
    if should_self_fence(True, daemon_silent, peer_silent, after):
        return ISOLATED
    return None


def server_back(own: Answer, fenced_at: float) -> bool:
    """The server answers again after the fence (someone started it)."""
    return own.error is None and own.row is not None and (own.answered_at or 0.0) > fenced_at
