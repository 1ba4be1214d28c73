"""The real pghad daemon on the simulation: its Daemon, Loop, executor and procedures.

Rounds run as Daemon.run runs them (a round, then the wake event or the probe interval). A kill
is kill -9: its tasks end where they are, nothing is persisted on the way out; a restart is a new
Daemon reading the same state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg

from pghad.act.procedures import OperationResult
from pghad.act.requests import Failback, Failover, Request, Switchover
from pghad.config.model import Config, load_config
from pghad.daemon.app import Daemon
from pghad.errors import PghadError
from pghad.nodes.node import Node
from pghad.testing.sim.env import Env
from pghad.testing.sim.node import SimDriver, SimNode

# A round's probes and bookkeeping take real time; rounds that a wake starts at once, again and
# again, are a hot loop (the daemon would spin at full CPU on the same decision).
ROUND_COST_S = 0.005
HOT_ROUNDS = 50  # rounds within one second

REQUESTS: dict[str, Callable[[], Request]] = {
    "switchover": Switchover,
    "failover": Failover,
    "failback": Failback,
}


class DaemonProcess:
    def __init__(
        self, config_path: Path, env: Env, agents: bool, trace: Callable[[str], None]
    ) -> None:
        self.config_path = config_path
        self.env = env
        self.agents = agents
        self.trace = trace
        self.daemon: Daemon | None = None
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[Any]] = set()
        self.last_code = ""
        self._rounds: list[float] = []
        self.on_hot_loop: Callable[[int], None] = lambda rounds: None

    @property
    def alive(self) -> bool:
        return self.daemon is not None

    def _nodes(self, config: Config) -> Mapping[str, Node]:
        holder = f"daemon:{config.state.dir}" if self.agents else None
        return {
            n.name: SimNode(n, self.env, SimDriver(n, self.env, holder, config.self_fence_after))
            for n in config.nodes
        }

    def start(self) -> None:
        if self.daemon is not None:
            return  # one daemon per state directory (it holds the lock)
        config = load_config(self.config_path)
        daemon = Daemon(config, self.config_path, node_factory=self._nodes, clock=self.env.clock)
        daemon.loop.intake.next_schedule_check = float("inf")  # no backups in the simulation
        self.daemon = daemon
        self.last_code = ""
        self._task = asyncio.ensure_future(self._run(daemon))

    async def _run(self, daemon: Daemon) -> None:
        loop, clock = daemon.loop, self.env.clock
        while self.daemon is daemon:  # a killed daemon does not go round again
            started = clock()
            self._count_round(started)
            try:
                await loop.tick()
            except Exception as exc:  # as Daemon._round: say so, keep watching
                self.trace(f"daemon round failed: {type(exc).__name__}: {exc}")
            self._note(daemon)
            await asyncio.sleep(ROUND_COST_S)
            delay = max(0.0, loop.interval() - (clock() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(daemon.wake.wait(), delay)
            daemon.wake.clear()

    def _count_round(self, now: float) -> None:
        self._rounds = [t for t in self._rounds if now - t < 1.0] + [now]
        if len(self._rounds) > HOT_ROUNDS:
            self.on_hot_loop(len(self._rounds))

    def _note(self, daemon: Daemon) -> None:
        decision = daemon.recorder.last_decision
        if decision is None:
            return
        if decision.code != self.last_code or decision.actions:
            self.last_code = decision.code
            acts = ", ".join(
                type(a).__name__ + " " + getattr(a, "node", "") for a in decision.actions
            )
            self.trace(f"daemon decides {decision.code}" + (f" -> {acts}" if acts else ""))

    def kill(self) -> None:
        """kill -9: every task of the process ends now; work already on a host goes on."""
        daemon, self.daemon = self.daemon, None
        if daemon is None:
            return
        tasks: list[asyncio.Future[Any]] = [self._task] if self._task else []
        tasks += [e.task for e in daemon.loop.ops.running.values() if e.task is not None]
        tasks += list(daemon.loop._background)
        tasks += list(self._requests)
        for task in tasks:
            task.cancel()
        for entry in [*daemon.loop.ops.running.values(), *daemon.loop.ops.queue]:
            entry.future.cancel()
        self._task = None

    def request(self, kind: str) -> None:
        """An operator's request through the daemon's submit path (as the API sends it)."""
        if self.daemon is None:
            self.trace(f"operator {kind}: no daemon to ask")
            return
        self._requests.add(asyncio.ensure_future(self._submit(self.daemon, kind)))

    async def _submit(self, daemon: Daemon, kind: str) -> None:
        self.env.operator_busy += 1
        try:
            result = await daemon.submit(REQUESTS[kind]())
            assert isinstance(result, OperationResult)
            self.trace(f"operator {kind}: done, {result.new_primary} is the primary")
        except (PghadError, psycopg.Error, OSError) as exc:  # the API answers these as errors
            self.trace(f"operator {kind}: {type(exc).__name__}: {str(exc)[:100]}")
        finally:
            self.env.operator_busy -= 1
            task = asyncio.current_task()
            if task is not None:
                self._requests.discard(task)
