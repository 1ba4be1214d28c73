"""Run a program with a deadline, an environment of its own, and no orphan when cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
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
        process.kill()
        await process.wait()
        name = Path(argv[0]).name if argv else "?"
        raise NodeError(f"{name} timed out after {timeout:.0f} s") from exc
    except asyncio.CancelledError:
        # The daemon is stopping: do not leave pg_basebackup or pg_rewind running on their own.
        process.kill()
        await process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await gathered
        raise
    return CommandResult(
        process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
