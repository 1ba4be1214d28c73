"""Backup records: typed, saved as running before any work starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any


class BackupKind(StrEnum):
    # The key names users know from the original manual: backup:completo:<date>.
    FULL = "completo"
    INCREMENTAL = "incremental"


class BackupStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class BackupRecord:
    id: str
    kind: BackupKind
    status: BackupStatus
    day: date
    started_at: str
    path: str
    parent: str | None = None
    chain: tuple[str, ...] = ()
    reason: str = ""
    finished_at: str | None = None
    duration_s: float | None = None
    size_bytes: int | None = None
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    source_node: str | None = None
    verified: bool = False
    error: str | None = None
    compression: str = "none"
    logical_dump: str | None = None
    logical_dump_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def started(self) -> datetime:
        """The start as an instant: timestamps with different UTC offsets compare correctly."""
        moment = datetime.fromisoformat(self.started_at)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @property
    def is_tar(self) -> bool:
        return self.compression != "none"

    @property
    def redis_key(self) -> str:
        return f"backup:{self.id.replace('-', ':', 1)}"

    def with_(self, **changes: Any) -> BackupRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["status"] = self.status.value
        data["day"] = self.day.isoformat()
        data["chain"] = list(self.chain)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # a newer pghad's fields: kept out
        values["kind"] = BackupKind(values["kind"])
        values["status"] = BackupStatus(values["status"])
        values["day"] = date.fromisoformat(values["day"])
        values["chain"] = tuple(values.get("chain", ()))
        return cls(**values)

    def redis_fields(self) -> dict[str, str]:
        """Flat string fields for HSET (readable with redis-cli HGETALL)."""
        out: dict[str, str] = {}
        for key, value in self.to_dict().items():
            if key == "extra" or value is None:
                continue
            if isinstance(value, list):
                out[key] = ",".join(value)
            elif isinstance(value, bool):
                out[key] = "true" if value else "false"
            else:
                out[key] = str(value)
        return out


def backup_id(kind: BackupKind, day: date, taken: set[str]) -> str:
    """completo-2026-11-25, or completo-2026-11-25-2 for a second one the same day."""
    base = f"{kind.value}-{day.isoformat()}"
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
