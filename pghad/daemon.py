"""The long-running daemon: observe, decide, act, record; one loop, one operation at a time."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from pghad import logs, pgbin
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.service import BackupService
from pghad.cluster.decide import ClusterState, Decision, Memory, Promote, Rejoin, decide
from pghad.cluster.executor import Executor, Outcome
from pghad.cluster.memory_file import load_history, load_memory, save_memory
from pghad.cluster.observation import ClusterView
from pghad.cluster.probe import probe_node
from pghad.cluster.procedures import OperationResult, Procedures
from pghad.config import Config, NodeDriverKind, load_config
from pghad.errors import ConfigError, OperationRefused, PghadError
from pghad.event_sink import EventSink, RedisEventStream
from pghad.metrics import Metrics
from pghad.nodes import procs
from pghad.nodes.base import NodeDriver
from pghad.nodes.docker import DockerDriver, docker_client
from pghad.nodes.local import LocalDriver
from pghad.notify import SystemdNotifier
from pghad.reload import merge_reloaded
from pghad.state_store import EventJournal
from pghad.watch import PrimaryWatch

log = structlog.get_logger("pghad")
SUSPECT_PROBE_INTERVAL_S = 0.1
REJOIN_BACKOFF_MAX_S = 60.0
REJOIN_WAIT_S = 120.0
SHUTDOWN_BOUND_S = 3.0


class OperationBusy(OperationRefused):
    """Another operation is running; nothing was changed."""


def make_drivers(config: Config) -> dict[str, NodeDriver]:
    drivers: dict[str, NodeDriver] = {}
    client = None
    for node in config.nodes:
        if node.driver is NodeDriverKind.DOCKER:
            client = client or docker_client()
            drivers[node.name] = DockerDriver(node, config.auth, client)
        else:
            drivers[node.name] = LocalDriver(node, config.auth, pgbin.find_bin_dir(config.pg_bin))
    return drivers


def config_secrets(config: Config) -> list[str]:
    return [config.auth.password, config.auth.replication_password, config.api.token]


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or SystemdNotifier()
        self.drivers = make_drivers(config)
        self.executor = Executor(config, self.drivers)
        self.procedures = Procedures(config, self.drivers, self.executor)
        self.metrics = Metrics()
        names = {node.name for node in config.nodes}
        self.memory: Memory = load_memory(config.state.dir, names)
        self.history = load_history(config.state.dir)
        self.redis_stream = RedisEventStream(config.redis.url)
        self.sink = EventSink(EventJournal(config.state.dir / "events.jsonl"), self.redis_stream)
        self.backups = BackupService(
            config,
            pgbin.find_bin_dir(config.pg_bin),
            on_finished=self._backup_finished,
            on_error=lambda error: self.event("backup_not_run", level="warning", error=error),
        )
        self.view = ClusterView()
        self.last_decision: Decision | None = None
        self.last_round_at: float | None = None
        self.rejoins: dict[str, asyncio.Task[Outcome]] = {}
        self.operation: str | None = None
        self.action_lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.watch = PrimaryWatch(self.wake)
        self.stopping = False
        self._reload_requested = False
        self._retry_after: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # ---- recording -------------------------------------------------------------------------

    def event(self, kind: str, /, **fields: Any) -> None:
        """One journal entry (state dir and Redis) and one log line; `level` picks the level."""
        level = str(fields.pop("level", "info"))
        self.sink.record({"at": datetime.now(UTC).isoformat(), "event": kind, **fields})
        getattr(log, level)(kind, **fields)

    def _record_decision(self, decision: Decision) -> None:
        previous = self.last_decision
        if previous is None or decision.code != previous.code or decision.actions:
            self.event(
                "decision",
                state=decision.memory.state.value,
                code=decision.code,
                reason=decision.reason,
                actions=[type(a).__name__ for a in decision.actions],
                **decision.details,
            )
            self.notifier.status(f"{decision.memory.state.value}: {decision.reason}")
        self.last_decision = decision

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
        result = "ok" if outcome.ok else "failed"
        self.metrics.actions.labels(outcome.action, result).inc()
        if outcome.action == "fence":
            self.metrics.fencing.labels(outcome.node, result).inc()
        if outcome.action == "promote" and "fence" in outcome.fields:
            self.metrics.fencing.labels(outcome.node, "ok").inc()

    def _record_new_primary(
        self, new: str, old: str, cause: str, duration_s: float, reason: str
    ) -> None:
        entry = {
            "at": datetime.now(UTC).isoformat(),
            "cause": cause,
            "from": old,
            "to": new,
            "duration_s": duration_s,
            "reason": reason,
        }
        self.history.append(entry)
        needs_rejoin = (self.memory.needs_rejoin | {old}) - {new} if old else frozenset()
        self.memory = Memory(
            state=ClusterState.FAILING_OVER, primary=new, needs_rejoin=needs_rejoin
        )
        self.metrics.failovers.labels(cause).inc()
        self.metrics.last_failover.set(duration_s)
        save_memory(self.config.state.dir, self.memory, self.history)
        self.event("failover", **entry)

    # ---- the loop --------------------------------------------------------------------------

    async def observe(self) -> ClusterView:
        timeout = self.config.cluster.probe_timeout
        found = await asyncio.gather(
            *(probe_node(n, self.config.auth, timeout) for n in self.config.nodes)
        )
        return ClusterView({obs.name: obs for obs in found})

    def busy_nodes(self, now: float) -> frozenset[str]:
        if self.operation is not None:
            return frozenset(n.name for n in self.config.nodes)
        busy = {name for name, task in self.rejoins.items() if not task.done()}
        busy |= {name for name, until in self._retry_after.items() if now < until}
        return frozenset(busy)

    async def tick(self) -> Decision:
        self.view = await self.observe()
        now = time.monotonic()
        decision = decide(self.view, self.memory, self.config, now, self.busy_nodes(now))
        self._record_decision(decision)
        previous = self.memory
        self.memory = decision.memory
        if decision.actions:
            async with self.action_lock:
                await self._act(decision)
        if self.memory != previous:
            save_memory(self.config.state.dir, self.memory, self.history)
        self.metrics.observe_round(self.view, self.memory, time.time())
        primary = self.memory.primary
        if primary is not None and self.view.nodes.get(primary) and self.view[primary].writable:
            self.watch.follow(self.config.node(primary), self.config.auth)
        procs.reap_postgres_zombies()
        self._check_trigger()
        self.backups.poll()
        self.last_round_at = time.monotonic()
        self.notifier.watchdog()
        return decision

    async def _act(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, Rejoin):
                self._start_rejoin(action)
                continue
            outcome = await self.executor.run(action)
            self._record_outcome(outcome)
            if isinstance(action, Promote) and outcome.ok:
                self._record_new_primary(
                    action.node, action.old_primary, "automatic", outcome.duration_s, action.reason
                )

    def _start_rejoin(self, action: Rejoin) -> None:
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

        self.event("operation_started", operation="rejoin", node=action.node, reason=action.reason)
        self.rejoins[action.node] = asyncio.create_task(run())

    def interval(self) -> float:
        probe = self.config.cluster.probe_interval
        if self.memory.state is ClusterState.PRIMARY_DOWN:
            return min(probe, SUSPECT_PROBE_INTERVAL_S)
        return probe

    # ---- operations (API, CLI, trigger file) ------------------------------------------------

    def running_operation(self) -> str | None:
        if self.operation is not None:
            return self.operation
        running = [name for name, task in self.rejoins.items() if not task.done()]
        return f"rejoin of {running[0]}" if running else None

    async def run_operation(
        self, name: str, work: Callable[[], Awaitable[OperationResult]]
    ) -> OperationResult:
        running = self.running_operation()
        if running is not None:
            raise OperationBusy(f"{running} is running; retry when it has finished")
        self.operation = name
        self.event("operation_started", operation=name)
        try:
            async with self.action_lock:
                result = await work()
        except PghadError as exc:
            refused = isinstance(exc, OperationRefused)
            self.event(
                "operation_refused" if refused else "operation_failed",
                level="warning" if refused else "error",
                operation=name,
                error=str(exc),
            )
            raise
        finally:
            self.operation = None
            self.wake.set()
        self._record_new_primary(
            result.new_primary, result.old_primary, result.cause, result.duration_s, result.message
        )
        self.event(
            "operation_finished",
            operation=name,
            duration_s=result.duration_s,
            new_primary=result.new_primary,
            **result.details,
        )
        return result

    async def failover(self, force: bool) -> OperationResult:
        memory = self.memory
        return await self.run_operation(
            "failover",
            lambda: self.procedures.failover(memory.primary, memory.standby_eligible, force),
        )

    async def switchover(self) -> OperationResult:
        return await self.run_operation("switchover", self.procedures.switchover)

    async def failback(self) -> OperationResult:
        # Right after a failover the preferred node may still be rejoining: wait for that.
        preferred = self.config.preferred_primary
        rejoin = self.rejoins.get(preferred)
        if rejoin is not None and not rejoin.done() and self.operation is None:
            await asyncio.wait({rejoin}, timeout=REJOIN_WAIT_S)
        pending = self.config.cluster.auto_rejoin and preferred in self.memory.needs_rejoin
        return await self.run_operation("failback", lambda: self.procedures.failback(pending))

    def _check_trigger(self) -> None:
        trigger = self.config.state.trigger_path
        if not trigger.exists() or self.running_operation() is not None:
            return
        trigger.unlink(missing_ok=True)
        self.event("failback_trigger", path=str(trigger))

        async def run() -> None:
            with contextlib.suppress(PghadError):  # the outcome is already an event
                await self.failback()

        self._spawn(run())

    def _backup_finished(self, record: BackupRecord) -> None:
        ok = record.status is BackupStatus.OK
        self.event(
            "backup",
            level="info" if ok else "error",
            id=record.id,
            kind=record.kind.value,
            status=record.status.value,
            reason=record.reason,
            duration_s=record.duration_s,
            size_bytes=record.size_bytes,
            source_node=record.source_node,
            error=record.error,
        )
        if ok:
            self.metrics.backup_last_success.labels(record.kind.value).set(time.time())
            self.metrics.backup_duration.labels(record.kind.value).set(record.duration_s or 0)
            self.metrics.backup_size.labels(record.kind.value).set(record.size_bytes or 0)
        else:
            self.metrics.backup_failures.labels(record.kind.value).inc()

    # ---- health and status -----------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        if self.last_round_at is None:
            return False, "no probe round has finished yet"
        cluster = self.config.cluster
        limit = max(5.0, 3 * cluster.probe_interval + cluster.probe_timeout)
        age = time.monotonic() - self.last_round_at
        if age > limit:
            return False, f"the last probe round finished {age:.1f} s ago (limit {limit:g} s)"
        return True, f"last probe round {age:.1f} s ago"

    # ---- run, reload, stop -----------------------------------------------------------------

    async def run(self, serve_api: bool = True) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        procs.become_subreaper()
        server = None
        server_task: asyncio.Task[None] | None = None
        if serve_api:
            from pghad.api import ApiServer

            server = ApiServer(self)
            server.bind()
            server_task = asyncio.create_task(server.serve())
        self._spawn(self.redis_stream.run())
        self.event(
            "daemon_started",
            cluster=self.config.cluster.name,
            nodes=[n.name for n in self.config.nodes],
            remembered_primary=self.memory.primary,
            api=f"http://{self.config.api.bind}:{self.config.api.port}/" if serve_api else None,
        )
        first = True
        while not self.stopping:
            started = time.monotonic()
            await self.tick()
            if first:
                self.notifier.ready(f"watching {', '.join(n.name for n in self.config.nodes)}")
                first = False
            if self._reload_requested:
                self._reload()
            delay = max(0.0, self.interval() - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            self.wake.clear()
        if server is not None and server_task is not None:
            server.shutdown()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server_task, SHUTDOWN_BOUND_S)
        await self._shutdown()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def request_reload(self) -> None:
        self._reload_requested = True
        self.notifier.reloading()
        self.wake.set()

    def _reload(self) -> None:
        self._reload_requested = False
        if self.config_path is None:
            self.notifier.ready("reload skipped: no config file")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.event("config_reload_failed", level="error", error=str(exc), kept="running config")
            self.notifier.ready("reload failed; running with the previous config")
            return
        merged, needs_restart = merge_reloaded(self.config, new)
        self.config = merged
        self.executor.config = merged
        self.procedures.config = merged
        self.backups.config = merged
        self.event(
            "config_reloaded",
            failover_threshold=merged.cluster.failover_threshold,
            probe_interval=merged.cluster.probe_interval,
            needs_restart=needs_restart,
        )
        self.notifier.ready("config reloaded")

    def stop(self) -> None:
        if not self.stopping:
            self.notifier.stopping()
        self.stopping = True
        self.wake.set()

    async def _shutdown(self) -> None:
        self.watch.stop()
        for task in self.rejoins.values():
            task.cancel()
        await asyncio.gather(*self.rejoins.values(), return_exceptions=True)
        save_memory(self.config.state.dir, self.memory, self.history)
        self.event("daemon_stopped")
        await asyncio.sleep(0)  # let the Redis stream push the last events if it can
        for task in list(self._background):
            task.cancel()
        await asyncio.wait(
            self._background | {asyncio.create_task(self.redis_stream.close())},
            timeout=SHUTDOWN_BOUND_S,
        )


def run_daemon(config_path: Path) -> int:
    config = load_config(config_path)
    logs.configure(config.log.format, config.log.level, config_secrets(config))
    daemon = Daemon(config, config_path)
    asyncio.run(daemon.run())
    return 0
