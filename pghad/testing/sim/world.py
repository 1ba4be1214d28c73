"""The simulated world: servers, network, client, agents and the real daemon, stepped in virtual
time and checked after every step. One schedule, one seed, one trace."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

from pghad.testing.sim.agent import SILENCE, Contact, SimAgent
from pghad.testing.sim.checks import Checker, Violation
from pghad.testing.sim.client import Ack, Writer
from pghad.testing.sim.daemon import DaemonProcess
from pghad.testing.sim.env import Env
from pghad.testing.sim.faults import Faults
from pghad.testing.sim.hostops import Hosts
from pghad.testing.sim.network import Network
from pghad.testing.sim.schedule import NODES, Schedule
from pghad.testing.sim.server import SimServer, Timings
from pghad.testing.sim.settings import (
    PROBE_INTERVAL_S,
    RELAX_AFTER_S,
    config_text,
    fence_after,
    quiet_logs,
)
from pghad.testing.sim.vloop import START, VirtualClock, run_virtual

STEP_S = 0.1
SETTLE_S = 120.0  # after the last fault healed, a primary must be back within this
EARLY_STATE_S = 3.0  # when the copy of state.json a `stale_state` fault restores is taken
AGENT_INTERVAL_S = 0.2  # agent.peer_interval


@dataclass(frozen=True)
class Result:
    schedule: Schedule
    violations: tuple[Violation, ...]
    reports: tuple[Violation, ...]
    trace: tuple[str, ...]
    simulated_s: float
    acks: int
    cancel_acks: int

    @property
    def failed(self) -> bool:
        return bool(self.violations)


# The share of exchanges that must get through for the other host to count as answering.
ANSWERING_SHARE = 0.25


class World:
    def __init__(self, schedule: Schedule, state_dir: Path) -> None:
        self.schedule = schedule
        self.clock = VirtualClock()
        self.rng = random.Random(schedule.seed * 7919 + 17)
        self.trace: list[str] = []
        first, second = NODES
        self.servers = {
            first: SimServer(first, sync_names=f'"{second}"'),
            second: SimServer(second, in_recovery=True, upstream=first),
        }
        self.net = Network(self.rng)
        timings = Timings(promote=schedule.promote_s, clone=schedule.clone_s)
        hosts = Hosts(self.servers, self.net, timings, self.clock, self._marker)
        self.env = Env(self.servers, self.net, hosts, timings, self.clock)
        self.env.on_promote = self._promoting
        self.env.on_stop = self._stopped
        self._markers = 0
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = state_dir / "state.json"
        self.early_state: str | None = None  # state.json as the first rounds wrote it
        path = state_dir / "config.toml"
        path.write_text(config_text(state_dir, schedule))
        self.fence_after = fence_after(schedule)
        self.contacts: dict[str, Contact] = {}
        self.daemon = DaemonProcess(path, self.env, schedule.agents, self.note)
        self.daemon.on_hot_loop = self._hot_loop
        for name in NODES:
            self.env.agents[name] = self.new_agent(name) if schedule.agents else None
        self.writer = Writer(schedule.write_interval, schedule.cancel_after)
        self.checker = Checker(NODES, schedule.threshold, RELAX_AFTER_S, self.clock())
        self.faults = Faults(self)
        self._answerable: dict[str, float | None] = {n: None for n in NODES}
        self._shape: dict[str, str] = {}

    def new_agent(self, name: str) -> SimAgent:
        peer = next(n for n in NODES if n != name)
        contact = self.contacts.setdefault(name, Contact())
        return SimAgent.start(
            name,
            peer,
            AGENT_INTERVAL_S,
            self.fence_after,
            now=self.clock(),
            contact=contact,
            probe_interval=PROBE_INTERVAL_S,
        )

    def _hot_loop(self, rounds: int) -> None:
        decision = self.daemon.last_code
        self.checker.flag(self.clock(), "hot_loop", f"{rounds} rounds within 1 s ({decision})")

    def restore_early_state(self) -> None:
        """state.json restored from an older copy (a backup, a snapshot of the host)."""
        if self.early_state is not None:
            self.state_file.write_text(self.early_state)

    def note(self, text: str) -> None:
        self.trace.append(f"t={self.clock() - START:6.1f}s {text}")

    def _marker(self) -> int:
        self._markers -= 1
        return self._markers

    def _promoting(self, node: str, operator: bool) -> None:
        self.note(f"promote of {node} requested" + (" (operator)" if operator else ""))
        if not operator:
            self.checker.promoted(self.clock(), node, self.servers, self.net)

    def _stopped(self, node: str, operator: bool) -> None:
        if operator and not self.servers[node].running:
            self.checker.health[node].stopped_by_operation = True

    # ---- running ------------------------------------------------------------------------

    async def run(self) -> Result:
        start = self.clock()
        end = start + max(self.schedule.heal_at, 30.0) + SETTLE_S
        self.daemon.start()
        self.faults.plan(start)
        while self.clock() < end and not self.checker.violations:
            if self.early_state is None and self.clock() - start >= EARLY_STATE_S:
                self.early_state = self.state_file.read_text()
            self.faults.apply_due(self.clock())
            self.step()
            await asyncio.sleep(STEP_S)
        if not self.checker.violations:
            self.checker.final(self.clock(), self.servers, self.writer.acked)
        self.daemon.kill()
        await asyncio.sleep(0)
        acked = self.writer.acked
        return Result(
            self.schedule,
            tuple(self.checker.violations),
            tuple(self.checker.reports),
            tuple(self.trace),
            round(self.clock() - start, 1),
            sum(a.kind is Ack.SYNC for a in acked),
            sum(a.kind is Ack.CANCELLED for a in acked),
        )

    def step(self) -> None:
        now = self.clock()
        self.env.hosts.advance(now, STEP_S)
        for server in self.servers.values():
            upstream = self.servers.get(server.upstream) if server.upstream else None
            link = (
                upstream is not None and self.net.round_trip(server.name, upstream.name) is not None
            )
            server.stream(upstream if server.in_recovery else None, link, now, self.env.timings)
            if server.running:
                self.checker.server_running(server.name)
        self.writer.attempt(self.servers, self.net, now)
        acks = self.writer.settle(self.servers, self.net, now)
        self._agents(now)
        self.checker.step(now, self.servers, self.net, acks, self.daemon.alive)
        self._note_changes()

    def _agents(self, now: float) -> None:
        for name in NODES:
            peer = next(n for n in NODES if n != name)
            peer_server = self.servers[peer]
            answers = peer_server.up or self.env.agents.get(peer) is not None
            # The other host answers this one for the agents' rule only while it can reach this
            # node's server: a frozen server is down for the failover witness over there, so a
            # fence before that host has seen it again is the rule (it keeps a thawed primary
            # from writing beside one promoted meanwhile). Over a link that loses most exchanges
            # (70% each way: 91%), the agents (and that witness) may hear nothing for a whole
            # threshold: that host counts as silent too.
            reached = self.servers[name].up
            if self.net.exchanges(name, peer, ANSWERING_SHARE) and answers and reached:
                if self._answerable[name] is None:
                    self._answerable[name] = now
            else:
                self._answerable[name] = None
            agent = self.env.agents.get(name)
            if agent is None:
                continue
            peer_agent = self.env.agents.get(peer)
            why = agent.step(self.servers[name], peer_server, peer_agent, self.net, now)
            if why is not None:
                self.note(f"agent {name} fences its server ({why})")
                if why == SILENCE:  # fencing a superseded primary is right whoever answers
                    self.checker.self_fenced(now, name, self._answerable[name])
                self.env.hosts.fence(name)
                self.checker.health[name].fenced_by_agent = why == SILENCE

    def _note_changes(self) -> None:
        for name, server in self.servers.items():
            if not server.running:
                shape = "down" if server.has_data else "no data"
            elif server.in_recovery:
                shape = f"standby tl{server.timeline}" + (
                    f" streaming from {server.streaming_from}" if server.streaming_from else ""
                )
            else:
                shape = f"primary tl{server.timeline} sync={server.sync_names or 'none'}"
            shape += " frozen" if server.frozen else ""
            if self._shape.get(name) != shape:
                self._shape[name] = shape
                self.note(f"{name}: {shape}")


def run_schedule(schedule: Schedule, state_dir: Path) -> Result:
    world = World(schedule, state_dir)
    with quiet_logs():
        return run_virtual(world.run(), world.clock)
