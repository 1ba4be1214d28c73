"""One round: collect finished work, observe, decide, persist, start work, record.

The loop owns the cluster memory and the operations queue; everything that changes a server is
a request there, and every result comes back through `_collect` at the start of a round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from pghad.act.executor import Outcome
from pghad.act.procedures import OperationResult
from pghad.act.requests import Act, Lane, Request, Result, TakeBackup, describe
from pghad.backup.archive.archiver import Archiver
from pghad.backup.model import BackupRecord
from pghad.config.model import Config
from pghad.daemon.hooks import Hooks
from pghad.daemon.intake import Intake
from pghad.daemon.memory_file import load_history, load_memory, load_paused, save_memory
from pghad.daemon.operations import Entry, Operations
from pghad.daemon.runtime import Runtime
from pghad.decide import results
from pghad.decide.decide import decide
from pghad.decide.model import (
    Action,
    ClusterState,
    Memory,
    Promote,
    Rejoin,
    SetSynchronous,
    StartPrimary,
    StartStandby,
    action_key,
    action_name,
    action_target,
    is_safety_action,
)
from pghad.decide.observation import ClusterView, lagging
from pghad.decide.promotions import Promotion, PromotionCause
from pghad.errors import NodeError, OperationRefused, PghadError
from pghad.observe.observer import Observer
from pghad.record.recorder import Recorder
from pghad.system.clock import local_now

SUSPECT_PROBE_INTERVAL_S = 0.1
# While the primary is suspect, a round decides on what has answered by then: a silent host's
# probe (up to probe_timeout) goes on and its result is taken by a later round.
SUSPECT_ROUND_DEADLINE_S = 0.15
PERSIST_BOUND_S = 5.0
# Actions that should fix a node for good: retried only after a backoff, even when "ok".
SETTLING = (Rejoin, StartStandby, StartPrimary)


class Loop:
    def __init__(
        self,
        runtime: Runtime,
        recorder: Recorder,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = local_now,
    ) -> None:
        self.runtime = runtime
        self.recorder = recorder
        self.clock = clock
        self.wall_clock = wall_clock
        config = runtime.config
        self.memory: Memory = load_memory(config.state.dir, set(runtime.nodes))
        self.history = load_history(config.state.dir)
        self.paused = load_paused(config.state.dir)
        self.ops = Operations()
        self.view = ClusterView()
        self.observer = Observer()
        self.last_round_at: float | None = None
        self.intake = Intake(self.ops, recorder, lambda: self.runtime.config, wall_clock)
        self.hooks = Hooks(recorder, self.spawn)
        self.archiver = Archiver(lambda: self.config, runtime.backups.bin_dir, recorder.event)
        self._background: set[asyncio.Future[None]] = set()
        self._persisting = asyncio.Lock()  # a round and a pause request may both write state.json
        # A promotion an operation has recorded and not finished: every round keeps it in memory
        # (a round's view may predate it, or show the old primary still serving before it stops).
        self._intent: tuple[str, str | None] | None = None

    @property
    def config(self) -> Config:
        return self.runtime.config

    async def tick(self) -> None:
        await self._collect()
        timeout = self.config.cluster.probe_timeout
        suspect = self.memory.state is ClusterState.PRIMARY_DOWN
        deadline = min(timeout, SUSPECT_ROUND_DEADLINE_S) if suspect else timeout
        self.view = await self.observer.round(self.runtime.nodes, timeout, deadline)
        self.recorder.lag(lagging(self.view, self.config.cluster.lag_alert_s), self.view)
        now = self.clock()
        busy = frozenset(self.runtime.nodes) if self.ops.busy(Lane.CLUSTER) else frozenset()
        relaxing = any(
            isinstance(a, SetSynchronous) and a.relax for a in self.ops.pending_actions()
        )
        decision = decide(
            self.view, self.memory, self.config, now, busy, paused=self.paused, relaxing=relaxing
        )
        if self._intent is not None:
            decision = replace(
                decision, memory=results.promotion_intended(decision.memory, *self._intent)
            )
        self.recorder.decision(decision)
        changed = decision.memory != self.memory
        before, self.memory = self.memory, decision.memory
        actions = self._not_held(decision.actions, now)
        # Persist before acting: what an action makes true about safety is on disk first.
        if (changed or actions) and not await self._persist() and actions:
            self.recorder.event(
                "actions_skipped",
                level="error",
                actions=[action_name(a) for a in actions],
                reason="the state file could not be written; nothing is done unrecorded",
            )
            # Not done, so not remembered as done (a failover's "standby no longer eligible"
            # would otherwise refuse the same failover once the disk has room again).
            self.memory, actions = before, ()
        self._submit(actions)
        self.archiver.follow(self.view, self.memory.primary, now)
        self.intake.check_trigger()
        if self.intake.schedule_due(now):
            self.spawn(self.intake.schedule(self.runtime))
        for request in self.ops.start_queued(self._execute):
            self.recorder.event("operation_started", operation=describe(request))
        metrics = self.recorder.metrics
        metrics.observe_round(self.view, self.memory, time.time(), self.config.cluster.synchronous)
        metrics.observe_archive(self.archiver.state if self.archiver.enabled else None)
        self.last_round_at = self.clock()

    def _submit(self, actions: tuple[Action, ...]) -> None:
        if not actions:
            return
        if not self.ops.busy(Lane.CLUSTER):  # an API request may have come in
            self.ops.submit(Act(actions))
            return
        safety = tuple(a for a in actions if is_safety_action(a))
        if safety and not self.ops.busy(Lane.SAFETY):
            self.ops.submit(Act(safety, safety=True))

    async def record_promotion(self, new: str, old: str | None) -> None:
        """An operation is about to promote `new`: on disk first, so that no daemon (this one, or
        one restarted from the file) starts `old` as a primary while `new` may be one."""
        before = self.memory
        self.memory = results.promotion_intended(self.memory, new, old)
        self._intent = (new, old)
        if not await self._persist():
            self.memory, self._intent = before, None
            raise NodeError(
                f"step record: the state file could not be written, so {new} was not promoted "
                "(nothing is done unrecorded); free the state directory and retry"
            )

    async def set_paused(self, paused: bool) -> bool:
        """Maintenance mode on or off, on disk before it is answered; False if unchanged."""
        if paused == self.paused:
            return False
        self.paused = paused
        if not await self._persist():
            self.paused = not paused
            raise OSError("the state file could not be written; maintenance mode unchanged")
        self.recorder.event(
            "paused" if paused else "resumed", level="warning" if paused else "info"
        )
        self.recorder.metrics.paused.set(1 if paused else 0)
        self.ops.wake.set()
        return True

    def interval(self) -> float:
        probe = self.config.cluster.probe_interval
        if self.memory.state is ClusterState.PRIMARY_DOWN:
            return min(probe, SUSPECT_PROBE_INTERVAL_S)
        return probe

    # ---- persisting ------------------------------------------------------------------------

    async def _persist(self) -> bool:
        state_dir = self.config.state.dir
        try:
            async with self._persisting:
                await asyncio.wait_for(
                    asyncio.to_thread(
                        save_memory, state_dir, self.memory, self.history, self.paused
                    ),
                    PERSIST_BOUND_S,
                )
        except (OSError, TimeoutError) as exc:
            self.recorder.event("state_not_saved", level="error", error=str(exc) or "timeout")
            return False
        return True

    # ---- backoff ---------------------------------------------------------------------------

    def _not_held(self, actions: tuple[Action, ...], now: float) -> tuple[Action, ...]:
        allowed = []
        for action in actions:
            name, node = action_name(action), action_target(action)
            backoff = self.ops.backoff.get(action_key(action))
            if backoff is not None and backoff.not_before > now:
                if not backoff.announced:
                    backoff.announced = True
                    wait = round(backoff.not_before - now, 1)
                    self.recorder.event("action_held", action=name, node=node, retry_in_s=wait)
                continue
            allowed.append(action)
        return tuple(allowed)

    # ---- running requests (in their own task) -------------------------------------------------

    def _execute(self, request: Request) -> Awaitable[Result]:
        # An operation finishes with the runtime, memory and time it started with.
        return self.runtime.execute(request, self.memory, self.wall_clock(), self.record_promotion)

    # ---- collecting results (at the start of a round, before observing) --------------------

    async def _collect(self) -> None:
        finished = self.ops.collect()
        for entry in finished:
            self._finish(entry)
        if finished:
            await self._persist()
        for entry in finished:
            assert entry.task is not None
            if entry.task.cancelled():
                entry.future.cancel()
            elif entry.task.exception() is not None:
                entry.future.set_exception(entry.task.exception())  # type: ignore[arg-type]
                entry.future.exception()  # an API caller may be gone: no "never retrieved"
            else:
                entry.future.set_result(entry.task.result())

    def _finish(self, entry: Entry) -> None:
        assert entry.task is not None
        if not isinstance(entry.request, Act | TakeBackup):
            self._intent = None  # the operation is over: what it made true is observed now
        name = describe(entry.request)
        if entry.task.cancelled():
            self.recorder.event("operation_cancelled", operation=name)
            return
        error = entry.task.exception()
        if error is not None:
            refused = isinstance(error, OperationRefused)
            unexpected = not isinstance(error, PghadError)
            self.recorder.event(
                "operation_refused" if refused else "operation_failed",
                level="warning" if refused else "error",
                operation=name,
                error=f"{type(error).__name__}: {error}" if unexpected else str(error),
            )
            if isinstance(entry.request, Act):  # a bug must not repeat every round: back off
                for action in entry.request.actions:
                    self.ops.record(action_key(action), False, self.clock())
            return
        result = entry.task.result()
        if isinstance(result, tuple):
            self._finish_actions(entry.request, result)
        elif isinstance(result, OperationResult):
            self.hooks.after_operation(self.config, result)
            self._new_primary(
                result.new_primary,
                result.old_primary,
                result.cause,
                result.duration_s,
                result.message,
            )
            self.recorder.event(
                "operation_finished",
                operation=name,
                duration_s=result.duration_s,
                new_primary=result.new_primary,
                **result.details,
            )
        elif isinstance(result, BackupRecord):
            self.recorder.backup(result)

    def _finish_actions(self, request: Request, outcomes: tuple[Outcome, ...]) -> None:
        assert isinstance(request, Act)
        now = self.clock()
        for action, outcome in zip(request.actions, outcomes, strict=True):
            self.recorder.outcome(outcome)
            self.hooks.after_outcome(self.config, outcome)
            key = action_key(action)
            delay = self.ops.record(key, outcome.ok, now, always=isinstance(action, SETTLING))
            if not outcome.ok and delay:
                self.recorder.event(
                    "operation_retry",
                    level="warning",
                    action=outcome.name,
                    node=outcome.node,
                    retry_in_s=delay,
                    failures=self.ops.backoff[key].failures,
                )
            if isinstance(action, Promote):
                if outcome.ok:
                    self._new_primary(
                        action.node,
                        action.old_primary,
                        PromotionCause.AUTOMATIC,
                        outcome.duration_s,
                        action.reason,
                    )
                elif self.memory.primary == action.old_primary:
                    # Only while nothing has moved on: a round may already have seen the node
                    # promoted (late), and its standby then is another node.
                    self.memory = results.promotion_failed(self.memory)

    def _new_primary(
        self, new: str, old: str, cause: PromotionCause, duration_s: float, reason: str
    ) -> None:
        promotion = Promotion(datetime.now(UTC), cause, old, new, duration_s, reason)
        self.history.append(promotion)
        self.memory = results.new_primary(self.memory, new, old or None)
        self.recorder.metrics.failovers.labels(cause.value).inc()
        self.recorder.metrics.last_failover.set(duration_s)
        self.recorder.event("failover", **promotion.to_json())

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.recorder.event("background_failed", level="error", error=str(task.exception()))

    async def stop(self) -> None:
        await self.observer.close()
        await self.archiver.stop()
        await self.ops.cancel_all()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._persist()
