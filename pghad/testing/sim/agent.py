"""The agent on a database host, thin: its watches, its lease, its self-fence, its heartbeat answer.

The decisions are pghad's own (`should_self_fence`, `Lease`, `Answer.silent_for`); this module
only feeds them what the simulated host sees. It is the one place to adapt when the agent's
rules change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pghad.agent.lease import Lease
from pghad.agent.service import should_self_fence
from pghad.agent.watch import Answer
from pghad.cluster.observation import ServerState

from .network import Network
from .server import SimServer

HANG_S = 5.0  # a watch's query that gets no answer errors out after this long


class Refused(Exception):
    """The agent's lease is held by another daemon."""


@dataclass
class Seen:
    """One watch: pghad's Answer and since when its current query has hung."""

    answer: Answer = field(default_factory=Answer)
    hung_since: float | None = None

    def answered(self, row: dict[str, Any], now: float) -> None:
        self.answer = Answer(row=row, answered_at=now, ever=True)
        self.hung_since = None

    def failed(self, error: str, now: float) -> None:
        self.answer.error = error
        if self.answer.answered_at is None:
            self.answer.answered_at = now  # silent since we started
        self.hung_since = None

    def silent(self, now: float) -> None:
        if self.hung_since is None:
            self.hung_since = now
        elif now - self.hung_since >= HANG_S:
            self.failed("no answer", now)


@dataclass
class SimAgent:
    node: str
    peer: str
    interval: float
    self_fence_after: float  # its own config's, until the daemon's first heartbeat
    lease: Lease = field(default_factory=Lease)
    local: Seen = field(default_factory=Seen)
    peer_watch: Seen = field(default_factory=Seen)
    self_fenced: str | None = None
    next_check: float = 0.0
    fenced_at: list[float] = field(default_factory=list)

    def writable(self) -> bool:
        answer = self.local.answer
        return answer.error is None and answer.row is not None and not answer.row["in_recovery"]

    def step(self, own: SimServer, peer: SimServer, net: Network, now: float) -> bool:
        """One check interval: both watches, then the guard. True when it fenced its server."""
        if now < self.next_check:
            return False
        self.next_check = now + self.interval
        self._watch(self.local, own, 0.0, now)
        self._watch(self.peer_watch, peer, net.round_trip(self.node, self.peer), now)
        after = self.self_fence_after
        daemon = self.lease.silent_for(now)
        answer = self.peer_watch.answer
        silent = answer.silent_for(now, self.interval) if answer.ever else None
        if self.self_fenced is None and should_self_fence(self.writable(), daemon, silent, after):
            self.self_fenced = "immediate shutdown" if own.running else "not running"
            self.fenced_at.append(now)
            return True
        if self.self_fenced is not None and daemon is not None and daemon < after:
            self.self_fenced = None
        return False

    def _watch(self, seen: Seen, server: SimServer, trip: float | None, now: float) -> None:
        if trip is None or server.frozen:
            seen.silent(now)
        elif not server.running:
            seen.failed("connection refused", now)
        else:
            seen.answered({"in_recovery": server.in_recovery, "receiver_status": None}, now)

    def heartbeat(self, holder: str, self_fence_after: float, own: SimServer, now: float) -> Any:
        if not self.lease.renew(holder, "daemon", now, 10.0):
            raise Refused(self.lease.host)
        self.self_fence_after = self_fence_after
        silent = self.peer_watch.answer.silent_for(now, self.interval)
        return {
            "server": server_state(own).value,
            "self_fence_after": self.self_fence_after,
            "peer": {
                "reachable": self.peer_watch.answer.ever and silent is None,
                "down_for_s": round(silent, 3) if silent is not None else None,
            },
        }


def server_state(server: SimServer) -> ServerState:
    """What the host's driver tells of its server (a frozen one is running)."""
    if server.running:
        return ServerState.RUNNING
    return ServerState.STOPPED if server.has_data else ServerState.NO_DATA
