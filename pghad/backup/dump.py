"""The logical dump beside each full backup: pg_dumpall streamed through gzip."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

from pghad.backup.steps import StepFailed, partial_dump
from pghad.system.commands import child_env, kill_group
from pghad.system.files import create_private


async def logical_dump(bin_dir: Path, conninfo: str, password: str, target: Path) -> None:
    """Write `target` (mode 0600 from the start); `gunzip -c FILE | psql` restores it.

    Compression runs in a worker thread, so a large dump never holds up the daemon's loop.
    """
    process = await asyncio.create_subprocess_exec(
        str(bin_dir / "pg_dumpall"),
        "-d",
        conninfo,
        "--no-password",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env({"PGPASSWORD": password}),
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    tmp = partial_dump(target)
    errors = asyncio.ensure_future(process.stderr.read())
    try:
        with create_private(tmp) as raw, gzip.GzipFile(fileobj=raw, mode="wb") as handle:
            while chunk := await process.stdout.read(1 << 20):
                await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        await kill_group(process)
        errors.cancel()
        raise
    message = (await errors).decode(errors="replace")
    if await process.wait() != 0:
        raise StepFailed("logical-dump", f"pg_dumpall failed: {message.strip()[-500:]}")
    tmp.replace(target)
