"""A simulated PostgreSQL server: its WAL as a list of record ids, timelines, recovery, streaming.

Only what the invariants and pghad's decisions read is modelled: which records a server holds (a
commit is an id; a checkpoint or a promotion marker is a negative id), whether it is writable,
whom it streams from and how fresh that stream is, and synchronous_standby_names.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import psycopg

from pghad.decide.sync_names import waited_for

LSN_BASE = 0x3000000
RECORD_BYTES = 100


def lsn_of(length: int) -> int:
    return LSN_BASE + RECORD_BYTES * length


@dataclass
class Timings:
    """How long server-side work takes, and the replication timeouts (simulated seconds)."""

    promote: float = 0.5
    start: float = 1.0
    stop: float = 0.3
    rewind: float = 2.0
    clone: float = 5.0
    receiver_timeout: float = 60.0  # wal_receiver_timeout; keepalives every half of it

    @property
    def keepalive(self) -> float:
        return self.receiver_timeout / 2


@dataclass
class Job:
    """Work the server (or a tool on its host) finishes on its own: its caller's death does not
    stop it."""

    kind: str
    due: float
    done: asyncio.Future[None]
    source: str | None = None
    role_standby: bool = False
    upstream: str | None = None
    operator: bool = False  # a promotion an operator asked for


@dataclass
class SimServer:
    name: str
    wal: list[int] = field(default_factory=list)
    timeline: int = 1
    running: bool = True
    in_recovery: bool = False
    has_data: bool = True
    upstream: str | None = None
    sync_names: str = ""
    frozen: bool = False  # SIGSTOP: no answer, no progress
    read_only: bool = False  # default_transaction_read_only (the SQL fence)
    refusing: bool = False  # refuses pghad's connections (pg_hba reject, no slots left)
    # How many times pghad set synchronous_standby_names to name no standby (a relax).
    relaxes: int = 0
    streaming_from: str | None = None  # the walreceiver's upstream while connected
    contact_at: float = 0.0  # the walreceiver's last exchange with its upstream
    msg_at: float = 0.0  # the walreceiver's last message (WAL or keepalive)
    jobs: list[Job] = field(default_factory=list)

    @property
    def lsn(self) -> int:
        return lsn_of(len(self.wal))

    @property
    def up(self) -> bool:
        """Running and answering."""
        return self.running and not self.frozen

    @property
    def writable(self) -> bool:
        return self.up and not self.in_recovery

    def holds(self, other_wal: list[int]) -> bool:
        """Whether `other_wal` is a prefix of this server's WAL (the same history so far)."""
        return len(other_wal) <= len(self.wal) and self.wal[: len(other_wal)] == other_wal

    def has(self, record: int, position: int) -> bool:
        return len(self.wal) >= position and self.wal[position - 1] == record

    def waits_for(self) -> frozenset[str]:
        return waited_for(self.sync_names)

    # ---- what happens to the process ----------------------------------------------------

    def halt(self) -> None:
        """The postmaster is gone (stopped, fenced, killed): connections and jobs with it."""
        self.running = False
        self.frozen = False
        self.streaming_from = None
        self.read_only = False
        for job in [j for j in self.jobs if j.kind in ("promote", "start")]:
            self.jobs.remove(job)
            job.done.set_exception(psycopg.OperationalError("the server closed the connection"))
            job.done.exception()  # its caller may be gone

    def promote(self, marker: int) -> None:
        self.in_recovery = False
        self.upstream = None
        self.streaming_from = None
        self.timeline += 1
        self.wal.append(marker)

    def take_history(self, source: SimServer) -> None:
        """pg_rewind or pg_basebackup from `source`: its WAL, timeline and settings."""
        self.wal = list(source.wal)
        self.timeline = source.timeline
        self.sync_names = source.sync_names
        self.has_data = True
        self.in_recovery = True

    # ---- streaming ------------------------------------------------------------------------

    def stream(self, primary: SimServer | None, link_ok: bool, now: float, t: Timings) -> None:
        """One step of this standby's walreceiver towards its upstream `primary`."""
        if not (self.up and self.in_recovery) or primary is None:
            if not self.frozen:
                self.streaming_from = None
            return
        if not primary.running or (primary.up and primary.in_recovery):
            self.streaming_from = None  # the upstream closed the connection
            return
        if link_ok and primary.up:
            if not primary.holds(self.wal):
                self.streaming_from = None  # diverged: the receiver errors out
                return
            if len(primary.wal) > len(self.wal) or self.timeline != primary.timeline:
                self.wal = list(primary.wal)
                self.timeline = primary.timeline
                self.msg_at = now
            if self.streaming_from != primary.name:
                self.msg_at = now
            self.streaming_from = primary.name
            self.contact_at = now
            if now - self.msg_at >= t.keepalive:
                self.msg_at = now
        if self.streaming_from and now - self.contact_at > t.receiver_timeout:
            self.streaming_from = None

    def receiver_age(self, now: float) -> float | None:
        return now - self.msg_at if self.streaming_from else None
