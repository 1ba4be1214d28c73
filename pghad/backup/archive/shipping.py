"""The archive's way to the bucket (repository.type = "s3"): each round, after segments are
stored here, ship what waits; while the bucket is unreachable the archive directory spools it.
A spool past 80% of repository.spool_alert_mb is an event, and a metric the alert rule
watches; nothing is dropped at the bound."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pghad.backup.repository import store_of
from pghad.backup.repository.wal import WalShipper
from pghad.config.model import Config
from pghad.errors import PghadError

if TYPE_CHECKING:
    from pghad.backup.archive.archiver import ArchiveState

Emit = Callable[..., None]
NEAR = 0.8


class Shipping:
    def __init__(self, state: ArchiveState, emit: Emit) -> None:
        self.state = state
        self.emit = emit
        self._shipper: WalShipper | None = None
        self._over = False

    def _for(self, config: Config, directory: Path) -> WalShipper | None:
        store = store_of(config)
        if store is None:
            self._shipper = None
            return None
        current = self._shipper
        if current is None or current.store is not store or current.archive_dir != directory:
            local_copy = config.repository.local_copy
            self._shipper = WalShipper(store, directory, local_copy)
        return self._shipper

    def ship(self, config: Config, directory: Path) -> None:
        """Run in the archiver's thread; never raises for the bucket (the spool keeps it)."""
        try:
            shipper = self._for(config, directory)
        except PghadError as exc:
            self._failed(str(exc))
            return
        if shipper is None:
            return
        self.state.spool_alert_bytes = config.repository.spool_alert_mb << 20
        try:
            shipped = shipper.ship()
        except PghadError as exc:
            self._failed(str(exc))
        else:
            if self.state.upload_error is not None:
                self.emit("archive_upload_resumed", shipped=shipped)
            self.state.upload_error = None
            if shipped:
                self.emit("archive_shipped", level="debug", segments=shipped)
        self.state.spool_bytes = shipper.spool_bytes()
        self._check_bound(self.state.spool_bytes, self.state.spool_alert_bytes)

    def _failed(self, error: str) -> None:
        if self.state.upload_error is None:
            hint = "segments wait in the archive directory until the bucket is back"
            self.emit("archive_upload_failed", level="error", error=error, hint=hint)
        self.state.upload_error = error

    def _check_bound(self, spool: int, bound: int) -> None:
        over = spool >= NEAR * bound  # the alert rule's threshold too
        if over and not self._over:
            self.emit(
                "archive_spool_near_bound",
                level="error",
                spool_bytes=spool,
                bound_bytes=bound,
                hint="the bucket has not taken WAL for a while: check repository.endpoint",
            )
        self._over = over
