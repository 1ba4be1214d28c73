"""What a database host's tools do to its server: start, stop, fence, rewind, clone.

Work that takes time is a Job on the server; the world finishes it when it is due, whether or not
its caller (the daemon, an agent's request) is still there to hear the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from pghad.decide.observation import ControlData, format_lsn
from pghad.errors import NodeError
from pghad.testing.sim.network import Network
from pghad.testing.sim.server import Job, SimServer, Timings, lsn_of

STOP_BOUND_S = 60.0  # pg_ctl stop -t
POLL_S = 0.1


class Hosts:
    def __init__(
        self,
        servers: Mapping[str, SimServer],
        net: Network,
        timings: Timings,
        clock: Callable[[], float],
        marker: Callable[[], int],
    ) -> None:
        self.servers = servers
        self.net = net
        self.timings = timings
        self.clock = clock
        self.marker = marker

    def job(self, server: SimServer, kind: str, takes: float, **fields: object) -> Job:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        job = Job(kind, self.clock() + takes, done, **fields)  # type: ignore[arg-type]
        server.jobs.append(job)
        return job

    async def start(self, name: str, standby: bool, upstream: str | None) -> None:
        server = self.servers[name]
        if not server.has_data:
            raise NodeError(f"{name}: no data directory: the server did not start")
        if server.running:
            return
        job = self.job(server, "start", self.timings.start, role_standby=standby, upstream=upstream)
        await asyncio.shield(job.done)

    async def stop(self, name: str) -> None:
        """A fast shutdown: a primary's shutdown checkpoint reaches the standbys streaming."""
        server = self.servers[name]
        deadline = self.clock() + STOP_BOUND_S
        while server.frozen:
            if self.clock() >= deadline:
                raise NodeError(f"{name}: the server did not stop within {STOP_BOUND_S:g} s")
            await asyncio.sleep(POLL_S)
        if not server.running:
            return
        await asyncio.sleep(self.timings.stop)
        if not server.running:
            return
        if not server.in_recovery:
            server.wal.append(self.marker())
            for other in self.servers.values():
                if (
                    other.streaming_from == name
                    and self.net.round_trip(name, other.name) is not None
                ):
                    other.wal = list(server.wal)
        server.halt()

    def fence(self, name: str) -> str:
        """Immediate shutdown (a kill when the server is frozen)."""
        server = self.servers[name]
        was = server.running
        server.halt()
        return "immediate shutdown" if was else "not running"

    async def rewind(self, name: str, source: str) -> None:
        server = self.servers[name]
        if not server.has_data:
            raise NodeError(f"{name}: no data directory")
        await self._copy(server, source, "rewind", self.timings.rewind)

    async def clone(self, name: str, source: str) -> None:
        await self._copy(self.servers[name], source, "clone", self.timings.clone)

    async def _copy(self, server: SimServer, source: str, kind: str, takes: float) -> None:
        if server.running:
            raise NodeError(f"{server.name}: {kind} needs the server stopped")
        self._source_up(server.name, source, kind)
        job = self.job(server, kind, takes, source=source)
        await asyncio.shield(job.done)

    def _source_up(self, name: str, source: str, kind: str) -> SimServer:
        origin = self.servers[source]
        if self.net.round_trip(name, source) is None or not origin.up:
            raise NodeError(f"{name}: {kind}: could not connect to {source}")
        return origin

    def control_data(self, name: str) -> ControlData:
        """pg_controldata of a stopped server: it stopped in recovery or as a primary."""
        server = self.servers[name]
        if server.running or not server.has_data:
            raise NodeError(f"{name}: pg_controldata: the server runs, or no data directory")
        state = "shut down in recovery" if server.in_recovery else "shut down"
        return ControlData(state, server.timeline, lsn_of(max(0, len(server.wal) - 1)))

    def checkpoint_lsn(self, name: str) -> str:
        server = self.servers[name]
        return format_lsn(lsn_of(max(0, len(server.wal) - 1))) or "0/0"

    # ---- finishing jobs (each step of the world) -----------------------------------------

    def advance(self, now: float, step: float) -> None:
        for server in self.servers.values():
            for job in list(server.jobs):
                if job.kind == "promote" and server.frozen:
                    job.due += step  # a frozen server makes no progress
                if job.due > now:
                    continue
                server.jobs.remove(job)
                try:
                    self._finish(server, job, now)
                except NodeError as exc:
                    job.done.set_exception(exc)
                    job.done.exception()  # its caller may be gone
                else:
                    job.done.set_result(None)

    def _finish(self, server: SimServer, job: Job, now: float) -> None:
        if job.kind == "promote":
            if server.running and server.in_recovery:
                server.promote(self.marker())
        elif job.kind == "start":
            if not server.has_data:
                raise NodeError(f"{server.name}: no data directory: the server did not start")
            server.running, server.frozen = True, False
            server.in_recovery = job.role_standby
            server.upstream = job.upstream if job.role_standby else None
            server.msg_at = now
        elif job.source is not None:
            if server.running:
                raise NodeError(f"{server.name}: the server was started during {job.kind}")
            if job.kind == "rewind" and not server.has_data:
                raise NodeError(f"{server.name}: the data directory went away during pg_rewind")
            server.take_history(self._source_up(server.name, job.source, job.kind))
