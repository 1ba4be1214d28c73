"""Whether the standby may be promoted automatically, and which synchronous setting to apply.

Pure functions over one round's link between the primary and its standby.
"""

from __future__ import annotations

from dataclasses import dataclass

from pghad.decide.codes import DecisionCode
from pghad.decide.model import SetSynchronous
from pghad.decide.observation import ReplicaInfo, format_lsn

# Bytes a standby may trail when pghad makes it the synchronous standby (it catches up quickly).
CAUGHT_UP_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Link:
    """The primary's view of its standby in one round."""

    primary: str
    standby: str
    replica: ReplicaInfo | None
    named: bool
    lag: int | None
    down_for: float
    primary_lsn: int | None = None
    watermark: int | None = None
    was_eligible: bool = False
    stalled: bool = False

    @property
    def streaming(self) -> bool:
        return self.replica is not None and self.replica.streaming and not self.stalled


def stalled_since(
    progress_at: float | None,
    last_flush: int | None,
    replica: ReplicaInfo | None,
    lag: int | None,
    now: float,
) -> float | None:
    """Since when the standby's flushed position has not moved although the primary has WAL it
    lacks (commits wait for it): its last progress. None while it keeps up or moves on."""
    if replica is None or not lag or last_flush is None or replica.flush_lsn != last_flush:
        return None
    return progress_at if progress_at is not None else now


@dataclass(frozen=True)
class Verdict:
    eligible: bool
    code: DecisionCode
    reason: str
    action: SetSynchronous | None = None
    watermark: int | None = None


def relax_under_way(link: Link) -> Verdict:
    """Commits may be acknowledged without the standby from the moment a relax lands: eligible
    again only after a new watermark, taken once no relax is under way."""
    return Verdict(
        False,
        DecisionCode.RELAXING_SYNC,
        f"relaxing synchronous replication: {link.standby} is ineligible",
    )


def synchronous(link: Link, relax_after: float) -> Verdict:
    """Eligibility, and the synchronous setting to apply, in synchronous mode."""
    standby, replica = link.standby, link.replica
    if link.streaming and link.named and replica is not None and replica.synchronous:
        watermark = link.watermark if link.watermark is not None else link.primary_lsn
        flushed = replica.flush_lsn
        if watermark is not None and flushed is not None and flushed >= watermark:
            return Verdict(
                True, DecisionCode.HEALTHY, f"{standby} is the synchronous standby", None, watermark
            )
        return Verdict(
            False,
            DecisionCode.SYNC_CONFIRMING,
            f"{standby} is synchronous; eligible once it has flushed {format_lsn(watermark)}",
            None,
            watermark,
        )
    if link.streaming and not link.named:
        if link.lag is not None and link.lag <= CAUGHT_UP_BYTES:
            return Verdict(
                False,
                DecisionCode.ENABLING_SYNC,
                f"{standby} caught up: making it the synchronous standby",
                SetSynchronous(link.primary, standby, f"{standby} caught up"),
            )
        return Verdict(
            False, DecisionCode.STANDBY_CATCHING_UP, f"{standby} is catching up ({link.lag} B)"
        )
    if link.streaming:
        return Verdict(
            False, DecisionCode.STANDBY_NOT_SYNC, f"{standby} streams but is not yet synchronous"
        )
    if not link.named:
        return Verdict(
            False, DecisionCode.STANDBY_DOWN, f"{standby} is not streaming and not synchronous"
        )
    # Not streaming but still named: commits wait for it, so nothing acknowledged is missing on
    # it. It stays eligible until pghad relaxes synchronous replication.
    if link.down_for >= relax_after:
        return Verdict(
            False,
            DecisionCode.RELAXING_SYNC,
            f"{standby} has not streamed for {link.down_for:.1f} s: relaxing synchronous "
            "replication so the primary keeps taking writes; "
            f"{standby} is not eligible for promotion until it catches up",
            SetSynchronous(
                link.primary, None, f"{standby} down for {link.down_for:.1f} s", relax=True
            ),
        )
    return Verdict(
        link.was_eligible,
        DecisionCode.STANDBY_MISSING,
        f"{standby} is not streaming ({link.down_for:.1f} s); commits wait for it until "
        f"{relax_after:g} s",
    )


def asynchronous(link: Link, max_lag: int, sync_names: str) -> Verdict:
    off = SetSynchronous(link.primary, None, "synchronous mode is off", relax=True)
    action = off if sync_names else None
    if link.streaming and link.lag is not None and link.lag <= max_lag:
        return Verdict(
            True, DecisionCode.HEALTHY, f"{link.standby} streams, {link.lag} B behind", action
        )
    return Verdict(
        False,
        DecisionCode.STANDBY_LAGGING,
        f"{link.standby} is not streaming or lags more than {max_lag} bytes",
        action,
    )
