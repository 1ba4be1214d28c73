"""Requests that come from the outside world rather than the API: the failback trigger file and
the backup calendar. Both only queue requests; the loop runs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from redis.exceptions import RedisError

from pghad.act.requests import Failback, Lane, TakeBackup
from pghad.backup.planner import is_due
from pghad.config.model import Config
from pghad.daemon.operations import Operations
from pghad.daemon.runtime import Runtime
from pghad.record.recorder import Recorder

SCHEDULE_CHECK_S = 30.0


class Intake:
    def __init__(
        self,
        ops: Operations,
        recorder: Recorder,
        config: Callable[[], Config],
        wall_clock: Callable[[], datetime],
    ) -> None:
        self.ops = ops
        self.recorder = recorder
        self.config = config
        self.wall_clock = wall_clock
        self.next_schedule_check = 0.0
        self._trigger_problem: str | None = None
        self._prefix_checked = False  # another cluster under the same Redis key names?

    def check_trigger(self) -> None:
        """A trigger file asks for a failback; it is taken only when no operation runs."""
        trigger = self.config().state.trigger_path
        problem = None
        try:
            if trigger.is_dir():
                problem = f"{trigger} is a directory: remove it; the trigger must be a plain file"
            elif trigger.exists() and not self.ops.busy(Lane.CLUSTER):
                trigger.unlink()
                self.recorder.event("failback_trigger", path=str(trigger))
                self.ops.submit(Failback(trigger=str(trigger)))
        except OSError as exc:
            problem = f"cannot use the trigger file {trigger}: {exc.strerror}"
        if problem is not None and problem != self._trigger_problem:
            self.recorder.event("failback_trigger_unusable", level="error", error=problem)
        self._trigger_problem = problem

    def schedule_due(self, now: float) -> bool:
        if now < self.next_schedule_check:
            return False
        self.next_schedule_check = now + SCHEDULE_CHECK_S
        return True

    async def _check_prefix(self, runtime: Runtime) -> None:
        try:
            others = await asyncio.to_thread(runtime.catalog.other_clusters)
        except (RedisError, OSError):
            return  # Redis is away: ask again next time
        self._prefix_checked = True
        if others:
            self.recorder.event(
                "redis_prefix_shared",
                level="error",
                clusters=sorted(others),
                error="backups of another cluster use the same Redis key names; pghad will "
                "not overwrite them: give each cluster its own [redis] key_prefix",
            )

    async def schedule(self, runtime: Runtime) -> None:
        """Queue the scheduled backup when it is due; otherwise bring Redis up to date."""
        backup = runtime.config.backup
        records = await asyncio.to_thread(runtime.catalog.records)
        self.recorder.last_backups(records)  # a restarted daemon knows its last backups
        if not self._prefix_checked:
            await self._check_prefix(runtime)
        due = backup.schedule and is_due(records, self.wall_clock(), backup.time_of_day)
        if due and not self.ops.busy(Lane.BACKUP):
            self.ops.submit(TakeBackup(scheduled=True))
            return
        await asyncio.to_thread(runtime.catalog.flush)
