"""Run a program with a deadline, an environment of its own, and no orphan when cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from pghad.errors import NodeError

# Passed on to child programs; everything else (API token, passwords) stays in the daemon.
INHERITED = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "HOME", "DOCKER_HOST")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: locale and PATH from ours, plus `extra` (a password, say)."""
    env = {k: v for k, v in os.environ.items() if k in INHERITED or k.startswith("LC_")}
    return {**env, **(extra or {})}


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL a program started with start_new_session and everything it started: a child
    left behind (pg_dumpall's pg_dump) would block on a pipe nobody reads any more.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    # asyncio's wait() also waits for the pipes to close: read them to their end (every writer
    # is dead now), or a pipe paused because nobody read it would never report its end.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.read()
    await process.wait()


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


async def run_command(
    argv: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    echo_stderr: bool = False,
) -> CommandResult:
    """Run a program; `echo_stderr` also copies its stderr (progress) to ours as it comes."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=child_env(env),
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr = process.stderr

    async def read_stderr() -> bytes:
        chunks = []
        while chunk := await stderr.read(4096):
            chunks.append(chunk)
            if echo_stderr:
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
        return b"".join(chunks)

    gathered = asyncio.gather(process.stdout.read(), read_stderr(), process.wait())
    try:
        out, err, _ = await asyncio.wait_for(gathered, timeout)
    except TimeoutError as exc:
        await kill_group(process)
        name = Path(argv[0]).name if argv else "?"
        raise NodeError(f"{name} timed out after {timeout:.0f} s") from exc
    except asyncio.CancelledError:
        # The daemon is stopping: do not leave pg_basebackup or pg_rewind running on their own.
        await kill_group(process)
        with contextlib.suppress(asyncio.CancelledError):
            await gathered
        raise
    return CommandResult(
        process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
