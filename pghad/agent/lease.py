"""One daemon per cluster: an agent takes changes from the daemon holding its lease.

The daemon renews the lease with every heartbeat (each round). A holder is named by the daemon's
host and state directory, so a restarted daemon is the same holder; another daemon is refused
until the lease has gone unrenewed for its whole time to live.
"""

from __future__ import annotations

from dataclasses import dataclass

from pghad.nodes.agent_api import LEASE_TTL_S


@dataclass
class Lease:
    holder: str | None = None
    host: str | None = None
    expires_at: float = 0.0
    renewed_at: float | None = None  # the last heartbeat of any holder (None: never)

    def held_by_other(self, holder: str | None, now: float) -> bool:
        return self.holder is not None and self.holder != holder and now < self.expires_at

    def renew(self, holder: str, host: str, now: float, ttl: float = LEASE_TTL_S) -> bool:
        """Grant or renew for `holder`; False when another daemon holds it."""
        if self.held_by_other(holder, now):
            return False
        self.holder, self.host = holder, host
        self.expires_at = now + ttl
        self.renewed_at = now
        return True

    def allows(self, holder: str | None, now: float) -> bool:
        """Whether a change from `holder` is accepted (anyone, while no lease is live)."""
        return not self.held_by_other(holder, now)

    def silent_for(self, now: float) -> float | None:
        return None if self.renewed_at is None else now - self.renewed_at
