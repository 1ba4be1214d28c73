"""The one promotion policy: when a standby may be promoted, for automatic failover and for
the operator's failover alike."""

from __future__ import annotations

from typing import NamedTuple

from pghad.decide.codes import DecisionCode
from pghad.decide.observation import ClusterView, ServerState

# How long the standby may have heard nothing from the primary's walsender before pghad believes
# the primary is really gone rather than unreachable from pghad alone.
RECEIVER_SILENCE_S = 2.0
# The standby's agent checks the primary every agent.peer_interval (0.2 s): its silence may have
# begun a little after pghad's own.
WITNESS_SLACK_S = 0.5


class Refusal(NamedTuple):
    code: DecisionCode
    reason: str


def refuse_promotion(
    view: ClusterView,
    eligible: bool,
    standby: str,
    busy: frozenset[str] = frozenset(),
    *,
    paused: bool = False,
    threshold: float | None = None,
    primary: str | None = None,
    now: float = 0.0,
) -> Refusal | None:
    """The first reason not to promote `standby` now, or None.

    The one promotion policy: automatic failover and the operator's failover both ask it (the
    operator may override only `standby_ineligible`, with force). With `threshold` (automatic
    failover), a standby with an agent also needs that agent's word that the primary has been
    unreachable from its own host as long: the second witness. A primary whose driver says its
    server runs (and is not frozen) is alive, only pghad's connections fail: without agents,
    the driver's word; with agents, the primary's agent answering this round that its own SQL
    check of the server answers as a writable primary (the daemon then reaches that host).
    That answer counts while it is fresh: within half the threshold (heartbeats come every
    round); an answer from before a cut of the primary's host says nothing of it now.
    """
    obs = view[standby]
    old = view[primary] if primary is not None and threshold is not None else None
    receiver_age = obs.receiver_msg_age_s or 0.0
    # The receiver's silence is judged like the witness's: the threshold less the slack, at
    # most RECEIVER_SILENCE_S (a low threshold must not wait for the fixed 2 s).
    silence = RECEIVER_SILENCE_S
    if threshold is not None:
        silence = min(RECEIVER_SILENCE_S, threshold - WITNESS_SLACK_S)
    witness = obs.witness if threshold is not None else None
    seen = witness.primary_down_for_s if witness is not None else None
    checks = (
        (paused, DecisionCode.PAUSED, "pghad is paused (maintenance mode): `pghad resume` ends it"),
        (standby in busy, DecisionCode.STANDBY_BUSY, "an operation is running on it"),
        (
            old is not None and old.witness is None and old.server is ServerState.RUNNING,
            DecisionCode.PRIMARY_RUNNING,
            f"{primary}'s driver says its server is running and not frozen: it refuses "
            "pghad's connections (pg_hba.conf, connection slots, a password) but is alive",
        ),
        (
            old is not None
            and old.witness is not None
            and old.witness.available
            and old.witness.serving
            and now - old.witness.at <= (threshold or 0) / 2,
            DecisionCode.PRIMARY_RUNNING,
            f"{primary}'s agent says its server answers its own SQL check as a writable "
            "primary: it refuses pghad's connections (pg_hba.conf, connection slots, a password) "
            "but is alive",
        ),
        (
            not obs.reachable,
            DecisionCode.STANDBY_UNREACHABLE,
            f"it is unreachable too ({obs.error})",
        ),
        (not obs.is_standby, DecisionCode.STANDBY_NOT_IN_RECOVERY, "it is not a standby"),
        (
            not eligible,
            DecisionCode.STANDBY_INELIGIBLE,
            "it was not an eligible standby when the primary was last seen (not synchronous, "
            "lagging or not streaming), so it may lack acknowledged commits; retry with "
            "force=true to promote it anyway (commits the old primary acknowledged after the "
            "standby fell behind are then lost)",
        ),
        (
            witness is not None and not witness.available,
            DecisionCode.STANDBY_WITNESS_UNKNOWN,
            "its agent did not answer, so nothing confirms from the standby's host that the "
            "primary is down (that host may be cut off too)",
        ),
        (
            witness is not None and (seen is None or seen < (threshold or 0) - WITNESS_SLACK_S),
            DecisionCode.PRIMARY_ALIVE_FOR_STANDBY,
            "its host still reaches the primary"
            + (f" (silent from there for only {seen:.1f} s)" if seen is not None else "")
            + ", so only pghad cannot reach it",
        ),
        (
            obs.receiving and receiver_age < silence,
            DecisionCode.PRIMARY_ALIVE_FOR_STANDBY,
            f"it still receives WAL from the primary ({receiver_age:.1f} s ago), so the primary "
            "is alive and only unreachable from pghad",
        ),
    )
    for failed, code, why in checks:
        if failed:
            return Refusal(code, f"not promoting {standby}: {why}")
    return None
