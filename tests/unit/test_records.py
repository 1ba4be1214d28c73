"""Small promises of the recorder, the catalog and reload, on their own."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest

from pghad.act.executor import FenceResult, Outcome
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupKind, BackupRecord, BackupStatus
from pghad.config.model import parse_config
from pghad.config.reload import merge_reloaded
from pghad.decide.model import Promote
from pghad.errors import ConfigError
from pghad.record.event_sink import EventPipeline, JournalWriter
from pghad.record.metrics import Metrics
from pghad.record.recorder import Recorder
from pghad.system.notify import SystemdNotifier
from pghad.system.state_store import EventJournal, read_json, write_atomic
from pghad.testing import fake_config_text


def _recorder(tmp_path: Path) -> Recorder:
    pipeline = EventPipeline(JournalWriter(EventJournal(tmp_path / "events.jsonl")), None)
    return Recorder(pipeline, Metrics(), SystemdNotifier(address=""))


def _fencing(recorder: Recorder, node: str, outcome: str) -> float:
    value = recorder.metrics.registry.get_sample_value(
        "pghad_fencing_actions_total", {"node": node, "outcome": outcome}
    )
    return value or 0.0


def test_fencing_is_counted_on_the_fenced_node_as_it_happened(tmp_path: Path) -> None:
    recorder = _recorder(tmp_path)
    promote = Promote("b", "a", "primary_down")
    fenced = FenceResult("a", True, "immediate shutdown")
    recorder.outcome(Outcome(promote, True, 0.1, "b promoted", fenced))
    unfenced = FenceResult("a", False, "not fenced: host unreachable")
    recorder.outcome(Outcome(promote, True, 0.1, "b promoted", unfenced))
    assert _fencing(recorder, "a", "ok") == 1 and _fencing(recorder, "a", "failed") == 1
    assert _fencing(recorder, "b", "ok") == 0


def test_an_event_that_cannot_be_written_does_not_raise(tmp_path: Path) -> None:
    journal = tmp_path / "events.jsonl"
    journal.mkdir()  # appending to it fails, as a full disk or no descriptors would
    recorder = _recorder(tmp_path)
    recorder.event("decision", code="healthy")
    recorder.event("decision", code="healthy")
    assert recorder.pipeline.journal.failed == 2


def _record(ident: str, started_at: str) -> BackupRecord:
    return BackupRecord(
        id=ident,
        kind=BackupKind.FULL,
        status=BackupStatus.OK,
        day=date(2026, 3, 1),
        started_at=started_at,
        path=f"/b/{ident}",
    )


def test_records_are_ordered_by_instant_and_unknown_fields_are_tolerated(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path, None)
    later_in_utc = _record("x", "2026-03-01T02:00:00+01:00")  # 01:00 UTC
    earlier_text = _record("y", "2026-03-01T01:30:00+00:00")  # 01:30 UTC, sorts first as text
    data = {
        "records": [
            {**later_in_utc.to_dict(), "a_field_from_a_newer_pghad": 1},
            earlier_text.to_dict(),
        ],
        "redis_pending": [],
        "redis_deleted": [],
    }
    (tmp_path / "catalog.json").write_text(json.dumps(data))
    assert [r.id for r in catalog.records()] == ["x", "y"]


def test_reload_refuses_a_preferred_primary_that_is_not_running(tmp_path: Path) -> None:
    running = parse_config(fake_config_text(tmp_path))
    changed = fake_config_text(tmp_path, cluster='preferred_primary = "c"').replace(
        'name = "b"', 'name = "c"'
    )
    with pytest.raises(ConfigError, match=r"cluster\.preferred_primary 'c' is not one of"):
        merge_reloaded(running, parse_config(changed))


def test_two_writers_of_one_state_file_at_once_both_succeed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"

    def write_many(writer: int) -> None:
        for round_ in range(200):
            write_atomic(path, json.dumps({"writer": writer, "round": round_}))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write_many, range(4)))  # re-raises a writer's error
    assert read_json(path) is not None
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
