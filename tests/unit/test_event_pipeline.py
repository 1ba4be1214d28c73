"""Events: one chain of processors, then the log, the journal and Redis; the journal's writes
never on the loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pghad.record.event_sink import EventPipeline, JournalWriter
from pghad.record.logs import ScrubSecrets
from pghad.record.metrics import Metrics
from pghad.record.recorder import Recorder
from pghad.system.notify import SystemdNotifier
from pghad.system.state_store import EventJournal

PASSWORD = "pw-Secret-1"
TOKEN = "tok-Secret-2"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class _Failure(Exception):
    def __str__(self) -> str:
        return f"could not connect with password {PASSWORD}"


def test_a_secret_in_an_event_field_never_reaches_the_journal_nor_the_log(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "events.jsonl"
    pipeline = EventPipeline(JournalWriter(EventJournal(journal)), None, [PASSWORD, "", TOKEN])
    recorder = Recorder(pipeline, Metrics(), SystemdNotifier(address=""))
    with capture_logs() as logged:
        recorder.event(
            "action",
            level="error",
            detail=f"pg_basebackup failed: host=db password={PASSWORD} user=repl",
            fields={"nested": [f"Bearer {TOKEN}", ("tuple", TOKEN)]},
            error=_Failure(),
            # Passwords a connection string or URL spells out, though not the config's:
            conninfo="host=a password='other one' port=5432",
            environment="PGPASSWORD=unlisted",
            redis="redis://:hunter2@127.0.0.1:6379/0",
        )
    written = journal.read_text()
    for text in (written, json.dumps(logged, default=str)):
        for secret in (PASSWORD, TOKEN, "other one", "unlisted", "hunter2"):
            assert secret not in text
    entry = _lines(journal)[0]
    assert entry["detail"] == "pg_basebackup failed: host=db password=*** user=repl"
    assert entry["fields"] == {"nested": ["Bearer ***", ["tuple", "***"]]}
    assert entry["error"] == "could not connect with password ***"
    assert entry["conninfo"] == "host=a password=*** port=5432"
    assert entry["redis"] == "redis://:***@127.0.0.1:6379/0"


def test_a_reload_adds_its_secrets_to_the_scrubbed_ones(tmp_path: Path) -> None:
    journal = tmp_path / "events.jsonl"
    pipeline = EventPipeline(JournalWriter(EventJournal(journal)), None, [PASSWORD])
    pipeline.scrub([PASSWORD, "new-Secret-3"])
    pipeline.emit("info", "config_reloaded", {"note": f"{PASSWORD} then new-Secret-3"})
    assert _lines(journal)[0]["note"] == "*** then ***"


def test_the_journal_entry_has_its_shape_and_the_log_line_its_instant(tmp_path: Path) -> None:
    journal = tmp_path / "events.jsonl"
    pipeline = EventPipeline(JournalWriter(EventJournal(journal)), None)
    with capture_logs() as logged:
        pipeline.emit("warning", "lag_alert", {"node": "b", "replay_lag_s": 12.5})
    entry = _lines(journal)[0]
    assert list(entry) == ["at", "event", "node", "replay_lag_s"]
    assert (entry["event"], entry["node"], entry["replay_lag_s"]) == ("lag_alert", "b", 12.5)
    assert entry["at"].endswith("+00:00")
    line = logged[0]
    assert (line["event"], line["log_level"], line["node"]) == ("lag_alert", "warning", "b")
    assert datetime.fromisoformat(line["timestamp"]) == datetime.fromisoformat(entry["at"])


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("host=a password=x1 port=5", "host=a password=*** port=5"),
        ("host=a password = 'two words' port=5", "host=a password = *** port=5"),
        ("password='it\\'s' dbname=x", "password=*** dbname=x"),
        ("PGPASSWORD=x2 pg_dump", "PGPASSWORD=*** pg_dump"),
        ("postgresql://app:x3@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("redis://:x4@host/0 and redis://host/0", "redis://:***@host/0 and redis://host/0"),
        ("password authentication failed for user x", "password authentication failed for user x"),
        ("host=a password=*** port=5", "host=a password=*** port=5"),
    ],
)
def test_passwords_in_connection_strings_and_urls_are_scrubbed(text: str, scrubbed: str) -> None:
    assert ScrubSecrets(()).clean(text) == scrubbed


class _SlowJournal(EventJournal):
    """A disk that takes `delay` seconds per write (NFS gone slow, a disk failing)."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay
        self.writer_threads: set[str] = set()

    def append_all(self, events: list[dict[str, Any]]) -> None:
        self.writer_threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        super().append_all(events)


def test_a_slow_journal_never_holds_the_loop_and_is_drained_on_close(tmp_path: Path) -> None:
    journal = _SlowJournal(tmp_path / "events.jsonl", delay=0.3)
    pipeline = EventPipeline(JournalWriter(journal), None)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def scenario() -> float:
        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        for number in range(5):
            pipeline.emit("info", "decision", {"number": number})
        emitted_in = time.monotonic() - started
        await asyncio.sleep(0.2)  # the first write is still sleeping in its thread
        assert ticks >= 10
        await pipeline.close()
        ticking.cancel()
        return emitted_in

    emitted_in = asyncio.run(scenario())
    assert emitted_in < 0.1  # five writes on the loop would take 1.5 s
    assert [e["number"] for e in _lines(journal.path)] == [0, 1, 2, 3, 4]
    assert threading.main_thread().name not in journal.writer_threads


class _GatedJournal(EventJournal):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def append_all(self, events: list[dict[str, Any]]) -> None:
        self.entered.set()
        assert self.gate.wait(10)
        super().append_all(events)


def test_a_journal_that_falls_behind_drops_the_oldest_unwritten_and_says_so_once(
    tmp_path: Path,
) -> None:
    journal = _GatedJournal(tmp_path / "events.jsonl")
    writer = JournalWriter(journal, limit=3)

    async def scenario() -> None:
        writer.put({"event": "e", "n": 0})  # taken by the writer, which then blocks
        assert await asyncio.to_thread(journal.entered.wait, 10)
        for n in range(1, 7):
            writer.put({"event": "e", "n": n})  # 1, 2 and 3 are pushed out by 4, 5 and 6
        journal.gate.set()
        await writer.drained()

    with capture_logs() as logged:
        asyncio.run(scenario())
    assert [e["n"] for e in _lines(journal.path)] == [0, 4, 5, 6]
    behind = [e for e in logged if e["event"] == "event_journal_behind"]
    caught_up = [e for e in logged if e["event"] == "event_journal_caught_up"]
    assert len(behind) == 1 and [e["dropped"] for e in caught_up] == [3]
