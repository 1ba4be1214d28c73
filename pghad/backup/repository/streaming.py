"""Restore straight from the bucket: each chain member's archive is a FIFO in its backup
directory, fed by a thread that downloads and decrypts the object while the restore reads,
decompresses, checks and writes it. Nothing lands on disk twice, and the members stream in
parallel (the restore unpacks them side by side).

A failure in the bucket (an object changed, a wrong key) ends its stream early; the restore then
fails (the zstd frame is cut short) and the bucket's own error, naming the object, is raised
instead. The restore leaves its target as it found it, as for any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord
from pghad.backup.repository import store_of
from pghad.backup.repository.backups import MANIFEST, fetch_files, folder
from pghad.backup.repository.store import Store
from pghad.backup.zstd_tar import ARCHIVE
from pghad.config.model import Config

OPEN_POLL_S = 0.01


class Feeds:
    def __init__(self, store: Store, members: list[BackupRecord]) -> None:
        self.store = store
        self.members = members
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fifos: list[Path] = []

    def start(self) -> None:
        for member in self.members:
            path = Path(member.path)
            fetch_files(self.store, member, path, (MANIFEST,))
            fifo = path / ARCHIVE
            _remove_fifo(fifo)  # one a killed restore left behind
            os.mkfifo(fifo, 0o600)
            self._fifos.append(fifo)
            thread = threading.Thread(
                target=self._feed,
                args=(folder(member.id) + ARCHIVE, fifo),
                name=f"pghad-feed-{member.id}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _open(self, fifo: Path) -> int | None:
        """The FIFO opened for writing once the restore opens it for reading (None: stopped)."""
        while not self._stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(OPEN_POLL_S)
                continue
            os.set_blocking(fd, True)
            return fd
        return None

    def _feed(self, name: str, fifo: Path) -> None:
        try:
            fd = self._open(fifo)
            if fd is None:
                return
            with os.fdopen(fd, "wb", buffering=1 << 20) as out:
                self.store.get_stream(name, out)
        except BrokenPipeError:
            pass  # the restore stopped reading (it failed elsewhere): its error is the one
        except BaseException as exc:  # handed to the restore's thread in first_error()
            self.errors.append(exc)

    def first_error(self) -> BaseException | None:
        return self.errors[0] if self.errors else None

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for fifo in self._fifos:
            _remove_fifo(fifo)


def _remove_fifo(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISFIFO(os.lstat(path).st_mode):
            path.unlink()


def _streamed_members(catalog: Catalog, backup_id: str) -> list[BackupRecord]:
    record = catalog.get(backup_id)
    if record is None:
        return []
    chain = [found for member in record.chain if (found := catalog.get(member)) is not None]
    return [m for m in chain if not (Path(m.path) / ARCHIVE).is_file()]  # a FIFO: left over


@asynccontextmanager
async def streamed(config: Config, catalog: Catalog, backup_id: str) -> AsyncIterator[None]:
    """Within it, the chain of `backup_id` reads from the bucket where it is not here."""
    store = store_of(config)
    members = _streamed_members(catalog, backup_id) if store is not None else []
    if store is None or not members:
        yield
        return
    feeds = Feeds(store, members)
    try:
        await asyncio.to_thread(feeds.start)
        yield
    except BaseException:
        await asyncio.shield(asyncio.to_thread(feeds.close))
        problem = feeds.first_error()
        if problem is not None:
            raise problem from None
        raise
    # A restore that succeeded read every stream to its end: each chunk was authenticated
    # before it was written, and the frame's checksum and the manifest checked the whole.
    await asyncio.to_thread(feeds.close)
