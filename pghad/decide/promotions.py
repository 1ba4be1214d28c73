"""The promotion history the daemon keeps: what made each new primary, and when."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class PromotionCause(StrEnum):
    AUTOMATIC = "automatic"  # the loop failed over a primary that stayed down
    MANUAL = "manual"  # an operator's failover (a switchover when the primary was healthy)
    SWITCHOVER = "switchover"
    FAILBACK = "failback"


@dataclass(frozen=True)
class Promotion:
    at: datetime
    cause: PromotionCause
    old_primary: str  # "" when there was none
    new_primary: str
    duration_s: float
    reason: str

    def to_json(self) -> dict[str, object]:
        """As state.json, the `failover` event and GET /status spell it."""
        return {
            "at": self.at.isoformat(),
            "cause": self.cause.value,
            "from": self.old_primary,
            "to": self.new_primary,
            "duration_s": self.duration_s,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Promotion | None:
        """None for an entry this version cannot read (it is dropped, not guessed)."""
        try:
            return cls(
                at=datetime.fromisoformat(str(data["at"])),
                cause=PromotionCause(str(data["cause"])),
                old_primary=str(data.get("from") or ""),
                new_primary=str(data["to"]),
                duration_s=float(str(data.get("duration_s", 0.0))),
                reason=str(data.get("reason", "")),
            )
        except (KeyError, ValueError):
            return None
