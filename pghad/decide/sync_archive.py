"""The WAL archive as a synchronous standby: when commits wait for it, and the one change to
make to synchronous_standby_names for the standby's verdict and the archive together."""

from __future__ import annotations

from dataclasses import dataclass

from pghad.config.model import Config
from pghad.decide.model import SetSynchronous
from pghad.decide.observation import NodeObservation
from pghad.decide.sync_names import ARCHIVE, waited_for

CAUGHT_UP_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ArchiveSync:
    member: bool
    down_since: float | None
    reason: str


def archive_member(
    config: Config, obs: NodeObservation, down_since: float | None, now: float
) -> ArchiveSync | None:
    """Whether commits should wait for the archive; None when it is not to be synchronous."""
    if not (config.archive.enabled and config.archive.synchronous):
        return None
    replica = obs.replica(ARCHIVE)
    named = ARCHIVE in waited_for(obs.sync_standby_names)
    if replica is not None and replica.streaming:
        lag = (obs.current_lsn or 0) - (replica.flush_lsn or 0)
        if named or lag <= CAUGHT_UP_BYTES:
            return ArchiveSync(True, None, "the archive streams: commits wait for it too")
        return ArchiveSync(False, None, f"the archive is catching up ({lag} B)")
    since = down_since if down_since is not None else now
    relax = config.cluster.sync_relax_after
    if named and now - since < relax:
        return ArchiveSync(True, since, f"the archive is not streaming; commits wait {relax:g} s")
    return ArchiveSync(False, since, f"the archive has not streamed for {now - since:.1f} s")


def compose(
    primary: NodeObservation,
    standby: str,
    standby_action: SetSynchronous | None,
    archive: ArchiveSync | None,
) -> SetSynchronous | None:
    """The one change to make, if any, for the standby's verdict and the archive together."""
    current = waited_for(primary.sync_standby_names)
    if archive is None and ARCHIVE not in current:
        return standby_action  # no archive involved: the standby's verdict alone
    if standby_action is not None:
        wanted_standby = standby_action.standby
    else:
        wanted_standby = standby if standby in current else None
    member = archive is not None and archive.member
    wanted = frozenset(n for n in (wanted_standby, ARCHIVE if member else None) if n)
    if wanted == current:
        return None
    reasons = [standby_action.reason] if standby_action else []
    reasons += [archive.reason] if archive else ["the archive is no longer synchronous"]
    return SetSynchronous(
        primary.name,
        wanted_standby,
        "; ".join(reasons),
        archive=member,
        relax=bool(current - wanted),
    )
