"""Backups inside the daemon: the schedule check, one backup at a time, retention, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pghad.config import Config
from pghad.errors import OperationRefused, PghadError

from .catalog import Catalog
from .model import BackupRecord, BackupStatus
from .planner import Requested, is_due
from .runner import BackupRunner

SCHEDULE_CHECK_S = 30.0


def local_now() -> datetime:
    return datetime.now().astimezone()


class BackupService:
    def __init__(
        self,
        config: Config,
        bin_dir: Path,
        on_finished: Callable[[BackupRecord], None],
        on_error: Callable[[str], None],
        clock: Callable[[], datetime] = local_now,
    ) -> None:
        self.config = config
        self.catalog = Catalog(config.backup.dir, config.redis.url)
        self.runner = BackupRunner(config, self.catalog, bin_dir)
        self.on_finished = on_finished
        self.on_error = on_error
        self.clock = clock
        self.task: asyncio.Task[BackupRecord] | None = None
        self._next_check = 0.0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def run_now(self, requested: Requested) -> BackupRecord:
        if self.running:
            raise OperationRefused("a backup is already running; retry when it has finished")
        self.task = asyncio.create_task(self._run(requested))
        return await asyncio.shield(self.task)

    async def _run(self, requested: Requested) -> BackupRecord:
        record = await self.runner.run(self.clock(), requested)
        if record.status is BackupStatus.OK:
            await asyncio.to_thread(self.runner.apply_retention)
        self.on_finished(record)
        return record

    async def _scheduled(self) -> BackupRecord:
        try:
            return await self._run(Requested.AUTO)
        except PghadError as exc:
            self.on_error(str(exc))
            raise

    def poll(self) -> None:
        """Called every round: start the scheduled backup when due; push queued Redis records."""
        now = time.monotonic()
        if self.running or now < self._next_check:
            return
        self._next_check = now + SCHEDULE_CHECK_S
        backup = self.config.backup
        if backup.schedule and is_due(self.catalog.records(), self.clock(), backup.time_of_day):
            self.task = asyncio.create_task(self._scheduled())
            self.task.add_done_callback(lambda t: t.cancelled() or t.exception())
        else:
            asyncio.get_running_loop().run_in_executor(None, self.catalog.flush)
