"""The agent on a database host, thin: its watches, its lease, its self-fence, its heartbeat answer.

The decisions are pghad's own (`should_self_fence`, `Lease`, `Answer.silent_for`, and the
agent's rules for silence: from its start when it never heard anyone, the peer silent only when
neither its server nor its agent answers); this module only feeds them what the simulated host
sees. It is the one place to adapt when the agent's rules change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pghad.agent.guard import (
    ISOLATED,
    SUPERSEDED,
    daemon_silence,
    fence_reason,
    heartbeat_chance,
    peer_silence,
    server_back,
)
from pghad.agent.lease import Lease
from pghad.agent.watch import Answer
from pghad.decide.observation import ServerState
from pghad.testing.sim.network import Network
from pghad.testing.sim.server import SimServer

SILENCE = ISOLATED
HANG_S = 5.0  # a watch's query that gets no answer errors out after this long


class Refused(Exception):
    """The agent's lease is held by another daemon."""


@dataclass
class Contact:
    """The agent's contact file (agent.run_dir): when it last heard the daemon and its peer,
    kept across a restart of the agent (the host does not reboot in the simulation)."""

    daemon: float | None = None
    peer: float | None = None


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
            self.answer.answered_at = now
        self.hung_since = None

    def silent(self, now: float) -> None:
        if self.hung_since is None:
            self.hung_since = now
        elif now - self.hung_since >= HANG_S:
            self.failed("no answer", now)


def since(now: float, before: float | None = None) -> Seen:
    """A watch silent since the agent's start (or since the contact its file kept)."""
    if before is None:
        return Seen(Answer(answered_at=now))
    return Seen(Answer(answered_at=before, asked_since=now))


@dataclass
class SimAgent:
    node: str
    peer: str
    interval: float
    self_fence_after: float  # its own config's, until the daemon's first heartbeat
    started_at: float
    contact: Contact
    probe_interval: float  # the daemon's: it heartbeats once a round
    lease: Lease = field(default_factory=Lease)
    local: Seen = field(default_factory=Seen)
    peer_watch: Seen = field(default_factory=Seen)
    peer_agent: Seen = field(default_factory=Seen)
    self_fenced: str | None = None
    fenced_isolated: bool = False
    fenced_at: float = 0.0
    next_check: float = 0.0

    @classmethod
    def start(
        cls,
        node: str,
        peer: str,
        interval: float,
        after: float,
        *,
        now: float,
        contact: Contact,
        probe_interval: float,
    ) -> SimAgent:
        agent = cls(node, peer, interval, after, now, contact, probe_interval, next_check=now)
        agent.lease.renewed_at = contact.daemon
        agent.local = since(now)
        agent.peer_watch = since(now, contact.peer)
        agent.peer_agent = since(now, contact.peer)
        return agent

    def writable(self) -> bool:
        answer = self.local.answer
        return answer.error is None and answer.row is not None and not answer.row["in_recovery"]

    def reaches_peer(self, now: float) -> bool:
        """What its /health says: whether it reaches the other node's server."""
        answer = self.peer_watch.answer
        return answer.ever and answer.silent_for(now, self.interval) is None

    def step(
        self,
        own: SimServer,
        peer: SimServer,
        peer_agent: SimAgent | None,
        net: Network,
        now: float,
    ) -> str | None:
        """One check interval: the watches, then the guard. Why it fenced its server, if it did:
        SILENCE (neither the daemon nor the peer's host heard) or SUPERSEDED."""
        if now < self.next_check:
            return None
        self.next_check = now + self.interval
        trip = net.round_trip(self.node, self.peer)
        self._watch(self.local, own, 0.0, now)
        self._watch(self.peer_watch, peer, trip, now)
        if trip is None:
            self.peer_agent.silent(now)
        elif peer_agent is None:
            self.peer_agent.failed("connection refused", now)
        elif not peer_agent.reaches_peer(now):
            self.peer_agent.failed("its agent does not reach this node's server", now)
        else:
            self.peer_agent.answered({"peer_reachable": True}, now)
        chance = heartbeat_chance(self.probe_interval)
        daemon = daemon_silence(self.lease.renewed_at, self.started_at, now, chance)
        silent = self.peer_silent_for(now)
        heard = [a.answered_at for a in (self.peer_watch.answer, self.peer_agent.answer) if a.ever]
        self.contact.daemon = self.lease.renewed_at
        self.contact.peer = max((h for h in heard if h is not None), default=self.contact.peer)
        why = self._fence_reason(now, daemon, silent) if self.writable() else None
        if self.self_fenced is None and why is not None:
            self.self_fenced = "immediate shutdown" if own.running else "not running"
            self.fenced_isolated = why != SUPERSEDED
            self.fenced_at = now
            return why
        if self.self_fenced is not None and self._server_back():
            self.self_fenced = None
        return None

    def _fence_reason(self, now: float, daemon: float, peer: float | None) -> str | None:
        return fence_reason(
            self.local.answer,
            self.peer_watch.answer,
            daemon_silent=daemon,
            peer_silent=peer,
            after=self.self_fence_after,
            now=now,
            interval=self.interval,
        )

    def peer_silent_for(self, now: float) -> float | None:
        return peer_silence(self.peer_watch.answer, self.peer_agent.answer, now, self.interval)

    def _server_back(self) -> bool:
        return server_back(self.local.answer, self.fenced_at)

    def _watch(self, seen: Seen, server: SimServer, trip: float | None, now: float) -> None:
        if trip is None or server.frozen:
            seen.silent(now)
        elif not server.running:
            seen.failed("connection refused", now)
        else:
            timeline = None if server.in_recovery else server.timeline
            row = {"in_recovery": server.in_recovery, "receiver_status": None, "timeline": timeline}
            seen.answered(row, now)

    def heartbeat(self, holder: str, self_fence_after: float, own: SimServer, now: float) -> Any:
        if not self.lease.renew(holder, "daemon", now, 10.0):
            raise Refused(self.lease.host)
        self.self_fence_after = self_fence_after
        silent = self.peer_watch.answer.silent_for(now, self.interval)
        serving = self.writable() and self.local.answer.silent_for(now, self.interval) is None
        return {
            "server": server_state(own).value,
            "serving": serving,
            "self_fenced": self.self_fenced,
            "fenced_isolated": self.self_fenced is not None and self.fenced_isolated,
            "self_fence_after": self.self_fence_after,
            "peer": {
                "reachable": self.peer_watch.answer.ever and silent is None,
                "down_for_s": round(silent, 3) if silent is not None else None,
            },
        }


def server_state(server: SimServer) -> ServerState:
    """What the host's driver tells of its server."""
    if server.running:
        return ServerState.FROZEN if server.frozen else ServerState.RUNNING
    return ServerState.STOPPED if server.has_data else ServerState.NO_DATA
