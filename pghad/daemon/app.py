"""The daemon: wiring, signals, reload, the API server, and the control interface it serves."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from pghad.act.requests import Act, Failback, Lane, Request, Result
from pghad.backup.model import BackupRecord
from pghad.config.model import Config, load_config, require_api_token
from pghad.config.reload import merge_reloaded
from pghad.daemon.loop import Loop
from pghad.daemon.runtime import Runtime, make_nodes
from pghad.errors import ConfigError, NodeError, SetupError
from pghad.nodes.agent import AgentDriver, LeaseRefused
from pghad.nodes.node import Node, PgNode
from pghad.observe.watch import PrimaryWatch
from pghad.record import logs
from pghad.record.event_sink import EventPipeline, JournalWriter, RedisEventStream
from pghad.record.metrics import Metrics
from pghad.record.recorder import Recorder
from pghad.record.status import status_body
from pghad.system import procs, trust
from pghad.system.notify import SystemdNotifier
from pghad.system.state_store import EventJournal, hold_daemon_lock

log = structlog.get_logger("pghad")
SHUTDOWN_BOUND_S = 3.0
REJOIN_WAIT_S = 120.0


def config_secrets(config: Config) -> list[str]:
    return [
        config.auth.password,
        config.auth.replication_password,
        config.api.token,
        config.agent.token,
        urlsplit(config.redis.url).password or "",
    ]


async def take_leases(nodes: Mapping[str, Node]) -> None:
    """Agents take changes from one daemon: refuse to start while another holds them."""
    for node in nodes.values():
        driver = node.process
        if isinstance(driver, AgentDriver):
            try:
                await driver.heartbeat()
            except LeaseRefused as exc:
                raise SetupError(str(exc)) from exc
            except NodeError:
                continue  # an agent that does not answer yet: its heartbeat is retried each round


class Daemon:
    """Also the control interface of the API (pghad.api.control.Control)."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        notifier: SystemdNotifier | None = None,
        node_factory: Callable[[Config], Mapping[str, Node]] = make_nodes,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = config_path
        self.notifier = notifier or SystemdNotifier()
        self.metrics = Metrics()
        self.redis_stream = RedisEventStream(
            config.redis.url, config.redis.key_prefix, config.cluster.name
        )
        self.journal = EventJournal(config.state.dir / "events.jsonl")
        self.events_out = EventPipeline(
            JournalWriter(self.journal), self.redis_stream, config_secrets(config)
        )
        self.recorder = Recorder(self.events_out, self.metrics, self.notifier)
        self.node_factory = node_factory
        self.loop = Loop(Runtime.build(config, node_factory(config)), self.recorder, clock)
        self.wake = self.loop.ops.wake
        self.watch = PrimaryWatch(self.wake)
        self.stopping = False
        self._reload_requested = False

    # ---- the control interface ------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self.loop.runtime.config

    async def submit(self, request: Request) -> Result:
        """Queue a request and wait for its result (OperationBusy at once if its lane is taken)."""
        if isinstance(request, Failback):
            await self._let_rejoin_finish()
        return await self.loop.ops.submit(request)

    async def _let_rejoin_finish(self) -> None:
        # Right after a failover the preferred node may still be rejoining: wait for that.
        deadline = time.monotonic() + REJOIN_WAIT_S
        while isinstance(self.loop.ops.owner(Lane.CLUSTER), Act):  # automatic actions only
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)

    def status(self) -> dict[str, Any]:
        loop = self.loop
        return status_body(
            config=self.config,
            memory=loop.memory,
            view=loop.view,
            decision=self.recorder.last_decision,
            operation=loop.ops.current(Lane.CLUSTER),
            history=loop.history,
            paused=loop.paused,
            lagging=self.recorder.lagging,
            archive=loop.archiver.status(),
        )

    async def set_paused(self, paused: bool) -> bool:
        return await self.loop.set_paused(paused)

    def events(self, limit: int) -> list[dict[str, Any]]:
        return self.journal.read(limit)

    async def backups(self) -> list[BackupRecord]:
        return await asyncio.to_thread(self.loop.runtime.catalog.records)

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def health(self) -> tuple[bool, str]:
        last = self.loop.last_round_at
        if last is None:
            return False, "no probe round has finished yet"
        cluster = self.config.cluster
        limit = max(5.0, 3 * cluster.probe_interval + cluster.probe_timeout)
        age = self.loop.clock() - last
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
        await take_leases(self.loop.runtime.nodes)
        server = None
        server_task: asyncio.Task[None] | None = None
        if serve_api:
            from pghad.api.app import ApiServer

            server = ApiServer(self)
            server.bind()
            server_task = asyncio.create_task(server.serve())
        self.loop.spawn(self.redis_stream.run())
        self.recorder.event(
            "daemon_started",
            cluster=self.config.cluster.name,
            nodes=[n.name for n in self.config.nodes],
            remembered_primary=self.loop.memory.primary,
            api=f"http://{self.config.api.bind}:{self.config.api.port}/" if serve_api else None,
        )
        first = True
        while not self.stopping:
            started = time.monotonic()
            await self._round()
            if first:
                self.notifier.ready(f"watching {', '.join(n.name for n in self.config.nodes)}")
                first = False
            if self._reload_requested:
                await self._reload()
            delay = max(0.0, self.loop.interval() - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            self.wake.clear()
        if server is not None and server_task is not None:
            server.shutdown()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server_task, SHUTDOWN_BOUND_S)
        await self._shutdown()

    async def _round(self) -> None:
        try:
            await self.loop.tick()
        except Exception as exc:  # a bug or an exhausted machine: say so, keep watching
            log.exception("round_failed", error=str(exc))
        primary = self.loop.memory.primary
        node = self.loop.runtime.nodes.get(primary) if primary else None
        seen = self.loop.view.nodes.get(node.name) if node is not None else None
        if isinstance(node, PgNode) and seen is not None and seen.writable:
            self.watch.follow(node.config, node.auth)
        procs.reap_postgres_zombies()
        self.notifier.watchdog()

    def request_reload(self) -> None:
        self._reload_requested = True
        self.notifier.reloading()
        self.wake.set()

    async def _reload(self) -> None:
        self._reload_requested = False
        if self.config_path is None:
            self.notifier.ready("reload skipped: no config file")
            return
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
            merged, needs_restart = merge_reloaded(self.config, new)
            nodes = await asyncio.to_thread(self.node_factory, merged)
            runtime = await asyncio.to_thread(Runtime.build, merged, nodes)
        except ConfigError as exc:
            self.recorder.event(
                "config_reload_failed", level="error", error=str(exc), kept="running config"
            )
            self.notifier.ready("reload failed; running with the previous config")
            return
        # Secrets of the old and the new config are scrubbed from now on (a replaced password
        # may still appear in a late message).
        secrets = config_secrets(self.config) + config_secrets(merged)
        logs.configure(merged.log.format, merged.log.level, secrets)
        self.events_out.scrub(secrets)
        self.loop.runtime = runtime
        self.recorder.event(
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
        await self.loop.stop()
        self.recorder.event("daemon_stopped")
        await asyncio.sleep(0)  # let the Redis stream push the last events if it can
        await asyncio.wait({asyncio.create_task(self.events_out.close())}, timeout=SHUTDOWN_BOUND_S)


def raise_descriptor_limit() -> None:
    """Use the hard limit on open files: clients must not exhaust the usual soft 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_daemon(config_path: Path) -> int:
    config = load_config(config_path)
    require_api_token(config, str(config_path))
    raise_descriptor_limit()
    logs.configure(config.log.format, config.log.level, config_secrets(config))
    trust.require_own_dirs(
        config.state.dir, config.backup.dir, config.archive.path(config.backup.dir)
    )
    lock = hold_daemon_lock(config.state.dir)
    try:
        daemon = Daemon(config, config_path)
        asyncio.run(daemon.run())
    finally:
        lock.close()
    return 0
