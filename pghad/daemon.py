"""The long-running daemon: observe, decide, act, record; one loop, one operation at a time."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import structlog

from pghad import logs, pgbin
from pghad.cluster.decide import ClusterState, Decision, Memory, Promote, Rejoin, decide
from pghad.cluster.executor import Executor, Outcome
from pghad.cluster.memory_file import load_history, load_memory, save_memory
from pghad.cluster.observation import ClusterView
from pghad.cluster.probe import probe_node
from pghad.config import Config, NodeDriverKind, load_config
from pghad.conninfo import admin_conninfo
from pghad.errors import ConfigError, SetupError
from pghad.nodes import procs
from pghad.nodes.base import NodeDriver
from pghad.nodes.local import LocalDriver
from pghad.state_store import EventJournal

log = structlog.get_logger("pghad")
SUSPECT_PROBE_INTERVAL_S = 0.1
REJOIN_BACKOFF_MAX_S = 60.0


def make_drivers(config: Config) -> dict[str, NodeDriver]:
    drivers: dict[str, NodeDriver] = {}
    for node in config.nodes:
        if node.driver is not NodeDriverKind.LOCAL:
            raise SetupError(
                f"nodes ({node.name}).driver = {node.driver.value!r} is not "
                'available in this version; use driver = "local"'
            )
        drivers[node.name] = LocalDriver(node, config.auth, pgbin.find_bin_dir(config.pg_bin))
    return drivers


def config_secrets(config: Config) -> list[str]:
    return [config.auth.password, config.auth.replication_password, config.api.token]


class Daemon:
    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.drivers = make_drivers(config)
        self.executor = Executor(config, self.drivers)
        names = {node.name for node in config.nodes}
        self.memory: Memory = load_memory(config.state.dir, names)
        self.history = load_history(config.state.dir)
        self.journal = EventJournal(config.state.dir / "events.jsonl")
        self.view = ClusterView()
        self.operations: dict[str, asyncio.Task[Outcome]] = {}
        self.wake = asyncio.Event()
        self.stopping = False
        self._last_code: str | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watched: str | None = None
        self._retry_after: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    # ---- recording -------------------------------------------------------------------------

    def event(self, kind: str, /, **fields: Any) -> None:
        """One journal entry and one log line; `level` (default info) picks the log level."""
        level = str(fields.pop("level", "info"))
        record = {"at": datetime.now(UTC).isoformat(), "event": kind, **fields}
        self.journal.append(record)
        getattr(log, level)(kind, **fields)

    def _record_decision(self, decision: Decision) -> None:
        if decision.code != self._last_code or decision.actions:
            self.event(
                "decision",
                state=decision.memory.state.value,
                code=decision.code,
                reason=decision.reason,
                actions=[type(a).__name__ for a in decision.actions],
                **decision.details,
            )
            self._last_code = decision.code

    def _record_outcome(self, outcome: Outcome) -> None:
        self.event(
            "action",
            level="info" if outcome.ok else "error",
            action=outcome.action,
            node=outcome.node,
            ok=outcome.ok,
            duration_s=outcome.duration_s,
            detail=outcome.detail,
            **outcome.fields,
        )

    # ---- the loop --------------------------------------------------------------------------

    async def observe(self) -> ClusterView:
        cluster = self.config.cluster
        results = await asyncio.gather(
            *(
                probe_node(node, self.config.auth, cluster.probe_timeout)
                for node in self.config.nodes
            )
        )
        return ClusterView({obs.name: obs for obs in results})

    async def tick(self) -> Decision:
        self.view = await self.observe()
        now = time.monotonic()
        busy = frozenset(name for name, task in self.operations.items() if not task.done())
        busy |= {name for name, until in self._retry_after.items() if now < until}
        decision = decide(self.view, self.memory, self.config, now, busy)
        self._record_decision(decision)
        previous = self.memory
        self.memory = decision.memory
        for action in decision.actions:
            if isinstance(action, Rejoin):
                self._start_operation(action)
                continue
            outcome = await self.executor.run(action)
            self._record_outcome(outcome)
            if isinstance(action, Promote) and outcome.ok:
                self._record_failover(action, previous, outcome)
        if self.memory != previous:
            save_memory(self.config.state.dir, self.memory, self.history)
        self._ensure_watch()
        procs.reap_postgres_zombies()
        return decision

    def _record_failover(self, action: Promote, previous: Memory, outcome: Outcome) -> None:
        entry = {
            "at": datetime.now(UTC).isoformat(),
            "cause": "automatic",
            "from": action.old_primary,
            "to": action.node,
            "duration_s": outcome.duration_s,
            "reason": action.reason,
        }
        self.history.append(entry)
        self.memory = Memory(
            state=ClusterState.FAILING_OVER,
            primary=action.node,
            needs_rejoin=self.memory.needs_rejoin,
            timeline=previous.timeline,
        )
        self.event("failover", **entry)

    def _start_operation(self, action: Rejoin) -> None:
        async def run() -> Outcome:
            outcome = await self.executor.run(action)
            self._record_outcome(outcome)
            if outcome.ok:
                self._failures.pop(action.node, None)
            else:
                failures = self._failures.get(action.node, 0) + 1
                self._failures[action.node] = failures
                retry_in = min(REJOIN_BACKOFF_MAX_S, 2.0**failures)
                self._retry_after[action.node] = time.monotonic() + retry_in
                self.event(
                    "operation_retry",
                    level="warning",
                    action="rejoin",
                    node=action.node,
                    retry_in_s=retry_in,
                    failures=failures,
                )
            self.wake.set()
            return outcome

        self.event("operation_started", action="rejoin", node=action.node, reason=action.reason)
        self.operations[action.node] = asyncio.create_task(run())

    def _ensure_watch(self) -> None:
        """Hold a connection to the primary: its loss wakes the loop at once (no probe wait)."""
        primary = self.memory.primary
        if (
            primary is None
            or not self.view.nodes.get(primary, None)
            or not self.view[primary].writable
        ):
            return
        if (
            self._watch_task is not None
            and not self._watch_task.done()
            and self._watched == primary
        ):
            return
        if self._watch_task is not None:
            self._watch_task.cancel()
        self._watched = primary
        self._watch_task = asyncio.create_task(self._watch(primary))

    async def _watch(self, name: str) -> None:
        conninfo = admin_conninfo(self.config.node(name), self.config.auth, connect_timeout=2)
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute("LISTEN pghad_watch")
                async for _note in conn.notifies():
                    pass
        except (psycopg.Error, OSError):
            pass
        self.wake.set()

    def interval(self) -> float:
        probe = self.config.cluster.probe_interval
        if self.memory.state is ClusterState.PRIMARY_DOWN:
            return min(probe, SUSPECT_PROBE_INTERVAL_S)
        return probe

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        procs.become_subreaper()
        self.event(
            "daemon_started",
            cluster=self.config.cluster.name,
            nodes=[n.name for n in self.config.nodes],
            remembered_primary=self.memory.primary,
        )
        while not self.stopping:
            started = time.monotonic()
            await self.tick()
            if self._reload_requested:
                self._reload()
            delay = max(0.0, self.interval() - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            self.wake.clear()
        await self._shutdown()

    _reload_requested = False

    def request_reload(self) -> None:
        self._reload_requested = True
        self.wake.set()

    def _reload(self) -> None:
        self._reload_requested = False
        if self.config_path is None:
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.event("config_reload_failed", error=str(exc), kept="the running config")
            return
        if new.nodes != self.config.nodes or new.pg_bin != self.config.pg_bin:
            self.event(
                "config_reload_failed",
                error="nodes or pg_bin changed",
                kept="the running config; restart pghad to change nodes",
            )
            return
        self.config = new
        self.executor.config = new
        self.event(
            "config_reloaded",
            failover_threshold=new.cluster.failover_threshold,
            probe_interval=new.cluster.probe_interval,
        )

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    async def _shutdown(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        for task in self.operations.values():
            task.cancel()
        await asyncio.gather(*self.operations.values(), return_exceptions=True)
        save_memory(self.config.state.dir, self.memory, self.history)
        self.event("daemon_stopped")


def run_daemon(config_path: Path) -> int:
    config = load_config(config_path)
    logs.configure(config.log.format, config.log.level, config_secrets(config))
    daemon = Daemon(config, config_path)
    asyncio.run(daemon.run())
    return 0
