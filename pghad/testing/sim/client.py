"""The simulated application: commits on every writable server it reaches, with synchronous
commit semantics.

A commit is acknowledged once every standby synchronous_standby_names waits for has flushed it,
or at once when it waits for none (relaxing the setting releases the waiting ones). A wait that
the client cancels (a driver timeout) leaves the commit in place and is acknowledged with
PostgreSQL's warning: a separate kind of acknowledgment, reported apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pghad.testing.sim.network import CLIENT, Network
from pghad.testing.sim.server import SimServer


class Ack(StrEnum):
    SYNC = "ack"  # every waited-for standby flushed it, or none was waited for
    CANCELLED = "cancel_ack"  # the wait was cancelled: committed locally only


@dataclass
class Pending:
    commit: int
    server: str
    position: int  # the WAL length that holds the commit
    since: float


@dataclass
class Acked:
    commit: int
    server: str
    at: float
    kind: Ack


@dataclass
class Writer:
    interval: float  # seconds between commit attempts
    cancel_after: float | None  # a driver timeout that cancels a synchronous wait
    next_id: int = 1
    next_at: float = 0.0
    pending: list[Pending] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)

    def attempt(self, servers: Mapping[str, SimServer], net: Network, now: float) -> None:
        if now < self.next_at:
            return
        self.next_at = now + self.interval
        for server in servers.values():
            if not server.writable or server.read_only:
                continue
            if net.round_trip(CLIENT, server.name) is None:
                continue
            server.wal.append(self.next_id)
            self.pending.append(Pending(self.next_id, server.name, len(server.wal), now))
            self.next_id += 1

    def settle(self, servers: Mapping[str, SimServer], net: Network, now: float) -> list[Acked]:
        """Acknowledge what may be acknowledged now; drop waits whose server went away.

        The client hears an acknowledgment (and sends its cancel) only while it reaches the
        server; until then it waits."""
        done: list[Acked] = []
        still: list[Pending] = []
        for wait in self.pending:
            server = servers[wait.server]
            heard = net.up(CLIENT, server.name)
            kind = self._verdict(wait, server, servers, now) if heard else None
            if kind is None:
                if server.running and server.has(wait.commit, wait.position):
                    still.append(wait)
                continue
            done.append(Acked(wait.commit, wait.server, now, kind))
        self.pending = still
        self.acked += done
        return done

    def _verdict(
        self, wait: Pending, server: SimServer, servers: Mapping[str, SimServer], now: float
    ) -> Ack | None:
        if not server.up or server.in_recovery:
            return None
        if synced(server, servers, wait.position):
            return Ack.SYNC
        if self.cancel_after is not None and now - wait.since >= self.cancel_after:
            return Ack.CANCELLED
        return None


def synced(server: SimServer, servers: Mapping[str, SimServer], position: int) -> bool:
    """Whether a commit at `position` on `server` is flushed where synchronous commit wants it."""
    for name in server.waits_for():
        standby = servers.get(name)
        if standby is None or standby.streaming_from != server.name:
            return False
        if len(standby.wal) < position:
            return False
    return True


def can_acknowledge(server: SimServer, servers: Mapping[str, SimServer]) -> bool:
    """Writable, and a new commit would be acknowledged without a cancel (every standby it
    waits for streams from it)."""
    return server.writable and not server.read_only and synced(server, servers, 0)
