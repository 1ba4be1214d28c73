"""Where events go: the bounded journal in the state directory, and a capped Redis stream.

Redis is best effort: events queue in memory (bounded) and are pushed by a background task, so
Redis being slow or down never delays a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from pghad.record import logs
from pghad.system.state_store import EventJournal

STREAM = "pghad:events"
STREAM_MAXLEN = 10_000
QUEUE_LIMIT = 5_000
RETRY_S = 2.0

log = structlog.get_logger("pghad")


class RedisEventStream:
    def __init__(self, url: str, key_prefix: str = "", cluster: str = "") -> None:
        """Events go to `<key_prefix>pghad:events`, each with its cluster's name."""
        self.client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.stream = key_prefix + STREAM
        self.cluster = cluster
        self.pending: deque[dict[str, Any]] = deque(maxlen=QUEUE_LIMIT)
        self.wake = asyncio.Event()
        self.up: bool | None = None

    def push(self, event: dict[str, Any]) -> None:
        self.pending.append(event)
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                event = self.pending[0]
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
                    if self.up is not False:
                        log.warning("redis_unavailable", error=str(exc), queued=len(self.pending))
                    self.up = False
                    await asyncio.sleep(RETRY_S)
                    continue
                self.up = True
                self.pending.popleft()

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


class EventSink:
    def __init__(self, journal: EventJournal, stream: RedisEventStream | None) -> None:
        self.journal = journal
        self.stream = stream

    def record(self, event: dict[str, Any]) -> None:
        event = logs.scrub(event)  # no secret in the journal, Redis or the API's /events
        self.journal.append(event)
        if self.stream is not None:
            self.stream.push(event)
