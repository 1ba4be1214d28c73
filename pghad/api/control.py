"""What the HTTP API may ask of the daemon: a narrow interface, not the daemon's internals."""

from __future__ import annotations

from typing import Any, Protocol

from pghad.act.requests import Request, Result
from pghad.backup.model import BackupRecord
from pghad.config.model import Config


class Control(Protocol):
    @property
    def config(self) -> Config: ...

    async def submit(self, request: Request) -> Result:
        """Queue an operation and wait for its result; OperationBusy when one is running."""
        ...

    async def set_paused(self, paused: bool) -> bool:
        """Maintenance mode on or off (persisted); False when it already was."""
        ...

    def status(self) -> dict[str, Any]: ...

    def events(self, limit: int) -> list[dict[str, Any]]: ...

    async def backups(self) -> list[BackupRecord]: ...

    def metrics_text(self) -> bytes: ...

    def health(self) -> tuple[bool, str]: ...
