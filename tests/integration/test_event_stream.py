"""The event pipeline against a real Redis: what reaches the stream, and what waits for it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import redis
from structlog.testing import capture_logs

from pghad.record.event_sink import STREAM, EventPipeline, JournalWriter, RedisEventStream
from pghad.system.state_store import EventJournal

from ..conftest import RedisServer

PASSWORD = "pw-Stream-Secret"


def _pipeline(tmp_path: Path, url: str, prefix: str) -> tuple[EventPipeline, RedisEventStream]:
    stream = RedisEventStream(url, key_prefix=prefix, cluster="c1")
    journal = JournalWriter(EventJournal(tmp_path / "events.jsonl"))
    return EventPipeline(journal, stream, [PASSWORD]), stream


def _entries(client: redis.Redis, key: str) -> list[dict[bytes, bytes]]:
    """The stream's entries, oldest first, each as its fields."""
    entries = client.xrange(key) or []
    return [{_bytes(k): _bytes(v) for k, v in (fields or {}).items()} for _, fields in entries]


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        await asyncio.sleep(0.05)


def test_a_secret_in_an_event_field_never_reaches_the_redis_stream(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    prefix = f"{tmp_path.name}:"
    client = redis.Redis(port=redis_server.port)
    pipeline, stream = _pipeline(tmp_path, redis_server.url, prefix)

    async def scenario() -> None:
        pushing = asyncio.create_task(stream.run())
        pipeline.emit(
            "error",
            "action",
            {
                "detail": f"connection to host=db password={PASSWORD} failed",
                "conninfo": "host=db password=not-in-the-config",
                "nested": {"why": [f"secret {PASSWORD}"]},
            },
        )
        await _until(lambda: client.xlen(prefix + STREAM) == 1, 10, "stream entry")
        pushing.cancel()
        await pipeline.close()

    asyncio.run(scenario())
    [fields] = _entries(client, prefix + STREAM)
    client.close()
    raw = b" ".join(fields.values())
    assert PASSWORD.encode() not in raw and b"not-in-the-config" not in raw
    assert fields[b"cluster"] == b"c1"
    entry = json.loads(fields[b"event"])
    assert entry == json.loads((tmp_path / "events.jsonl").read_text())
    assert entry["detail"] == "connection to host=db password=*** failed"
    assert entry["nested"] == {"why": ["secret ***"]}


def test_events_wait_for_a_redis_that_is_down_and_arrive_in_order(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    client = redis.Redis(port=private_redis.port)
    pipeline, stream = _pipeline(tmp_path, private_redis.url, "")
    private_redis.stop()

    async def scenario() -> float:
        pushing = asyncio.create_task(stream.run())
        started = time.monotonic()
        for number in range(3):
            pipeline.emit("info", "decision", {"number": number})
        emitted_in = time.monotonic() - started
        await _until(lambda: stream.up is False, 10, "failed push")
        await asyncio.sleep(0.5)  # a retry is waiting
        private_redis.start()
        await _until(lambda: not stream.pending, 10, "push after Redis came back")
        pushing.cancel()
        await pipeline.close()
        return emitted_in

    with capture_logs() as logged:
        emitted_in = asyncio.run(scenario())
    assert emitted_in < 0.1  # nothing waited for Redis
    numbers = [json.loads(f[b"event"])["number"] for f in _entries(client, STREAM)]
    client.close()
    assert numbers == [0, 1, 2]
    assert [e["event"] for e in logged].count("redis_unavailable") == 1
