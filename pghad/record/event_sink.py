"""Where events go: through one chain of processors (plain JSON values, level, timestamp,
secrets scrubbed: the log's own, pghad.record.logs), then to the log, the bounded journal in the
state directory, and a capped Redis stream.

Neither the journal nor Redis is written on the event loop: the loop only queues (both queues
bounded), a worker thread appends to the journal and a background task pushes to Redis, so a
slow disk or a slow or absent Redis never delays a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import deque
from collections.abc import Iterable, MutableMapping
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_fixed

from pghad.record import logs
from pghad.system.state_store import EventJournal

STREAM = "pghad:events"
STREAM_MAXLEN = 10_000
QUEUE_LIMIT = 5_000
RETRY_S = 2.0
JOURNAL_QUEUE_LIMIT = 1_000
FAILURES_PER_REPORT = 100

log = structlog.get_logger("pghad")


class RedisEventStream:
    def __init__(self, url: str, key_prefix: str = "", cluster: str = "") -> None:
        """Events go to `<key_prefix>pghad:events`, each with its cluster's name."""
        self.client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.stream = key_prefix + STREAM
        self.cluster = cluster
        self.pending: deque[dict[str, Any]] = deque(maxlen=QUEUE_LIMIT)
        self.wake = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None  # set once run() starts
        self.up: bool | None = None

    def push(self, event: dict[str, Any]) -> None:
        """Queue an event; callable from any thread (the archiver stores segments in one)."""
        self.pending.append(event)
        if self.loop is None or _running_loop() is self.loop:
            self.wake.set()
        else:
            self.loop.call_soon_threadsafe(self.wake.set)

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                event = self.pending[0]
                retrying = AsyncRetrying(
                    retry=retry_if_exception_type((RedisError, OSError)),
                    wait=wait_fixed(RETRY_S),
                    before_sleep=self._went_down,
                )
                async for attempt in retrying:
                    with attempt:
                        await self._add(event)
                self.up = True
                if self.pending and self.pending[0] is event:  # not pushed out of a full queue
                    self.pending.popleft()

    async def _add(self, event: dict[str, Any]) -> None:
        try:
            await self.client.xadd(
                self.stream,
                {"event": json.dumps(event, default=str), "cluster": self.cluster},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        except (RedisError, OSError) as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py turns a cancelled read into a connection error: stop anyway.
                raise asyncio.CancelledError from exc
            raise

    def _went_down(self, state: RetryCallState) -> None:
        if self.up is not False and state.outcome is not None:
            error = str(state.outcome.exception())
            log.warning("redis_unavailable", error=error, queued=len(self.pending))
        self.up = False

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


class JournalWriter:
    """Appends events to the journal in a worker thread (the loop's default executor, which
    asyncio.run waits for on the way out); the loop only queues them.

    The queue is bounded: a disk that falls JOURNAL_QUEUE_LIMIT entries behind loses the oldest
    unwritten ones, said once when it starts and counted when it has caught up (their log lines
    and Redis entries are still there). Dropping, rather than waiting for room, keeps the loop
    running whatever the disk does. Outside a running loop (a command, a test) it writes at once.
    """

    def __init__(self, journal: EventJournal, limit: int = JOURNAL_QUEUE_LIMIT) -> None:
        self.journal = journal
        self.limit = limit
        self.failed = 0  # entries the disk refused
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._busy = False  # a drain is under way: it takes what is queued meanwhile
        self._overflowed = 0
        self._drain_done: asyncio.Future[None] | None = None

    def put(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if len(self._pending) >= self.limit:
                self._pending.popleft()
                self._overflowed += 1
                behind = self._overflowed == 1
            else:
                behind = False
            self._pending.append(entry)
            start, self._busy = not self._busy, True
        if behind:
            log.warning(
                "event_journal_behind",
                queued=self.limit,
                detail="the disk is slow: the oldest unwritten journal entries are dropped",
            )
        if start:
            self._start_drain()

    def _start_drain(self) -> None:
        try:
            self._drain_done = asyncio.get_running_loop().run_in_executor(None, self._drain)
        except RuntimeError:  # no running loop, or its executor already shut down
            self._drain()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._busy = False
                    dropped, self._overflowed = self._overflowed, 0
                    break
                batch = list(self._pending)
                self._pending.clear()
            self._write(batch)
        if dropped:
            log.warning("event_journal_caught_up", dropped=dropped)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.journal.append_all(batch)
        except Exception as exc:  # a full disk or no descriptors left: never the daemon's end
            before, self.failed = self.failed, self.failed + len(batch)
            if before == 0 or before // FAILURES_PER_REPORT != self.failed // FAILURES_PER_REPORT:
                with contextlib.suppress(Exception):  # even stderr failed: nothing to do
                    log.error(
                        "event_not_recorded",
                        events=[e.get("event") for e in batch[:10]],
                        error=str(exc),
                        dropped=self.failed,
                    )

    async def drained(self) -> None:
        """Wait until every queued entry is written (or refused)."""
        while self._busy:
            running = self._drain_done
            if running is not None and not running.done():
                await asyncio.wait({running})
            else:
                await asyncio.sleep(0.01)  # drained by a thread of its own (no loop there)


def plain_values(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Values as JSON stores them (anything else as its text), so that the scrubber reads the
    very text the journal and Redis keep."""
    for key, value in event_dict.items():
        event_dict[key] = _plain(value)
    return event_dict


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def journal_entry(event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """The shape of a journal line and a stream entry: `at` (ISO 8601, +00:00), `event`, then
    the event's fields; no level."""
    entry = dict(event_dict)
    entry.pop("level", None)
    stamp = str(entry.pop("timestamp"))
    return {"at": stamp.removesuffix("Z") + "+00:00", **entry}


class EventPipeline:
    """One event: its processors once, then the log line, the journal entry, the stream entry.

    Log lines are filtered by log.level; the journal and the stream take every event.
    """

    def __init__(
        self,
        journal: JournalWriter,
        stream: RedisEventStream | None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.journal = journal
        self.stream = stream
        self.processors: list[logs.EventProcessor] = []
        self.scrub(secrets)

    def scrub(self, secrets: Iterable[str]) -> None:
        """From now on, hide these secrets (passwords, tokens) wherever they appear."""
        self.processors = [plain_values, *logs.processors(logs.ScrubSecrets(secrets))]

    def emit(self, level: str, kind: str, fields: dict[str, Any]) -> None:
        event_dict: MutableMapping[str, Any] = {"event": kind, **fields}
        for processor in self.processors:
            event_dict = processor(None, level, event_dict)
        entry = journal_entry(event_dict)
        self.journal.put(entry)
        if self.stream is not None:
            self.stream.push(entry)
        getattr(log, level)(**event_dict)

    async def close(self) -> None:
        await self.journal.drained()
        if self.stream is not None:
            await self.stream.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
