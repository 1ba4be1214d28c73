"""What may be asked of the daemon's one owner of actions: typed requests, and the lane each
runs in (the loop's decisions, the API, the trigger file and the backup calendar all ask here)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pghad.act.executor import Outcome
from pghad.act.procedures import OperationResult
from pghad.backup.model import BackupRecord
from pghad.backup.planner import Requested
from pghad.decide.model import Action, action_name, action_target


class Lane(StrEnum):
    CLUSTER = "cluster"  # anything that changes a server: one at a time
    BACKUP = "backup"  # backups run beside cluster operations, one at a time
    # Relaxing synchronous replication and fencing a split brain: never queued behind an
    # operation (a copy may take hours while the primary's writes wait).
    SAFETY = "safety"


@dataclass(frozen=True)
class Act:
    """Actions decided by the loop, run in order."""

    actions: tuple[Action, ...]
    safety: bool = False  # only safety actions, run beside a cluster operation


@dataclass(frozen=True)
class Failover:
    force: bool = False


@dataclass(frozen=True)
class Switchover:
    pass


@dataclass(frozen=True)
class Failback:
    trigger: str | None = None  # the trigger file that asked for it


@dataclass(frozen=True)
class TakeBackup:
    kind: Requested = Requested.AUTO
    scheduled: bool = False


Request = Act | Failover | Switchover | Failback | TakeBackup
# What a request ends with: each action's outcome, an operation's result, or a backup's record.
Result = tuple[Outcome, ...] | OperationResult | BackupRecord


def lane_of(request: Request) -> Lane:
    if isinstance(request, TakeBackup):
        return Lane.BACKUP
    if isinstance(request, Act) and request.safety:
        return Lane.SAFETY
    return Lane.CLUSTER


def describe(request: Request) -> str:
    match request:
        case Act(actions, _):
            return ", ".join(f"{action_name(a)} of {action_target(a)}" for a in actions)
        case TakeBackup():
            return "a backup"
        case _:
            return type(request).__name__.lower()
