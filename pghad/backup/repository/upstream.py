"""A file whose bytes go to the bucket as they are written: the backup streams up while
pg_basebackup writes it (no full local copy first). A thread uploads from a pipe (multipart,
parts in parallel); a slow bucket slows the writer (the pipe fills) rather than memory."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import IO

from pghad.backup.repository.store import Store

PIPE_BUFFER = 1 << 20


class Upstream:
    def __init__(self, store: Store, name: str) -> None:
        read_fd, write_fd = os.pipe()
        self.name = name
        self.written = 0
        self._writer: IO[bytes] = open(write_fd, "wb", buffering=PIPE_BUFFER)  # noqa: SIM115
        self._reader: IO[bytes] = open(read_fd, "rb", buffering=PIPE_BUFFER)  # noqa: SIM115
        self._error: BaseException | None = None
        self._broken = False
        self._thread = threading.Thread(
            target=self._upload, args=(store,), name="pghad-upstream", daemon=True
        )
        self._thread.start()

    def _upload(self, store: Store) -> None:
        try:
            store.put_stream(self.name, self._reader)
        except BaseException as exc:  # raised in the writer's thread, at close()
            self._error = exc
        finally:
            self._reader.close()  # a writer still writing then gets a broken pipe

    def write(self, data: bytes) -> int:
        """Never raises for the bucket: after a failure the rest is dropped, and close() says
        why (the writer must read its source to the end whatever happens)."""
        if not self._broken:
            try:
                self._writer.write(data)
                self.written += len(data)
            except BrokenPipeError:
                self._broken = True
        return len(data)

    def close(self) -> None:
        """End the object and wait for the bucket to have it; raises what the upload met."""
        with contextlib.suppress(BrokenPipeError):
            self._writer.close()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop and drop the upload's outcome: what reached the bucket is never listed (no
        record.json) and the failed backup's objects are removed."""
        self._broken = True
        with contextlib.suppress(OSError):
            self._writer.close()
        self._thread.join()
