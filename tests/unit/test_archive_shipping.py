"""The spool's alert: an event when WAL waiting for the bucket nears the bound (80%), once per
crossing; and a bucket that cannot be reached is an event once per outage, not per round."""

from __future__ import annotations

from typing import Any

from pghad.backup.archive.archiver import ArchiveState
from pghad.backup.archive.shipping import Shipping


class Events:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, event: str, **_fields: Any) -> None:
        self.seen.append(event)


def test_the_spool_bound_is_an_event_once_per_crossing() -> None:
    events = Events()
    shipping = Shipping(ArchiveState(), events)
    for spool in (0, 500, 799, 800, 1500, 900, 0, 1200):
        shipping._check_bound(spool, 1000)
    assert events.seen == ["archive_spool_near_bound", "archive_spool_near_bound"]


def test_an_unreachable_bucket_is_one_event_per_outage() -> None:
    events = Events()
    state = ArchiveState()
    shipping = Shipping(state, events)
    for _ in range(3):
        shipping._failed("cannot reach the bucket")
    assert events.seen == ["archive_upload_failed"]
    assert state.upload_error == "cannot reach the bucket"
