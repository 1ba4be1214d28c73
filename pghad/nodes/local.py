"""The local node driver: pg_ctl, pg_rewind and pg_basebackup on this host, as the data owner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pghad.config import AuthConfig, NodeConfig
from pghad.conninfo import admin_conninfo, redacted, replication_conninfo
from pghad.errors import NodeError
from pghad.nodes import nodeconf, procs
from pghad.nodes.base import Role
from pghad.runas import chown_to, owner_of, prefix_for

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
FENCE_GRACE_S = 2.0
REWIND_ATTEMPTS = 20
REWIND_RETRY_S = 0.5


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
        env={**os.environ, **(env or {})},
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


@dataclass
class LocalDriver:
    node: NodeConfig
    auth: AuthConfig
    bin_dir: Path
    os_user: str | None = field(default=None)

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-postgresql.log"

    def _user(self) -> str:
        return self.os_user or owner_of(self.data_dir)

    async def _pg(
        self,
        program: str,
        *args: str,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        argv = [*prefix_for(self._user()), str(self.bin_dir / program), *args]
        result = await run_command(argv, timeout, env)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise NodeError(f"{self.node.name}: {program} failed: {' / '.join(detail)}")
        return result

    async def is_running(self) -> bool:
        return procs.live_postmaster(self.data_dir) is not None

    def _write_node_conf(self, primary: NodeConfig | None) -> None:
        conninfo = replication_conninfo(primary, self.auth, self.node.name) if primary else None
        path = self.data_dir / nodeconf.NODE_CONF
        path.write_text(nodeconf.render(self.node, conninfo))
        path.chmod(0o600)
        chown_to(path, self._user())
        nodeconf.ensure_include(self.data_dir / "postgresql.conf")
        nodeconf.strip_node_owned(self.data_dir / "postgresql.auto.conf")
        signal_file = self.data_dir / "standby.signal"
        if primary is not None:
            signal_file.touch()
            chown_to(signal_file, self._user())
        else:
            signal_file.unlink(missing_ok=True)

    async def start(self, role: Role, primary: NodeConfig | None = None) -> None:
        if await self.is_running():
            return
        if role is Role.STANDBY and primary is None:
            raise NodeError(f"{self.node.name}: a standby needs a primary to stream from")
        await self._wait_for_orphans()
        procs.clear_stale_pidfile(self.data_dir)
        procs.clear_stale_socket_lock(self.node.socket_dir or Path("/tmp"), self.node.port)
        self._write_node_conf(primary if role is Role.STANDBY else None)
        if not self.log_file.exists():
            self.log_file.touch()
            chown_to(self.log_file, self._user())
        await self._pg(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-s",
            timeout=START_TIMEOUT_S + 5,
        )

    async def stop(self, mode: str = "fast") -> None:
        if not await self.is_running():
            return
        result = await self._pg(
            "pg_ctl",
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(STOP_TIMEOUT_S),
            "-s",
            timeout=STOP_TIMEOUT_S + 5,
            check=False,
        )
        if result.returncode != 0 and await self.is_running():
            raise NodeError(f"{self.node.name}: pg_ctl stop -m {mode} failed: {result.stderr}")

    async def fence(self) -> str:
        """Stop the server at once: immediate shutdown, SIGKILL if frozen or too slow."""
        pid = procs.live_postmaster(self.data_dir)
        if pid is None:
            killed = procs.kill_all_in(self.data_dir)
            return f"not running ({killed} leftover processes killed)" if killed else "not running"
        if procs.process_state(pid) == "T":
            procs.kill_all_in(self.data_dir)
            return "frozen postmaster killed"
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown
        deadline = time.monotonic() + FENCE_GRACE_S
        while time.monotonic() < deadline and procs.is_alive(pid):
            await asyncio.sleep(0.05)
        if procs.is_alive(pid):
            procs.kill_all_in(self.data_dir)
            return "killed after immediate shutdown timed out"
        return "immediate shutdown"

    async def _wait_for_orphans(self, bound_s: float = 10.0) -> None:
        """Backends of a killed postmaster hold the data directory for a short while."""
        deadline = time.monotonic() + bound_s
        while procs.live_postmaster(self.data_dir) is None and procs.processes_in(self.data_dir):
            if time.monotonic() > deadline:
                procs.kill_all_in(self.data_dir)
                await asyncio.sleep(0.1)
                return
            await asyncio.sleep(0.05)

    async def rewind(self, source: NodeConfig) -> None:
        if await self.is_running():
            raise NodeError(f"{self.node.name}: stop the server before pg_rewind")
        source_info = admin_conninfo(source, self.auth, with_password=False)
        last_error: NodeError | None = None
        for _attempt in range(REWIND_ATTEMPTS):
            await self._wait_for_orphans()
            procs.clear_stale_pidfile(self.data_dir)
            try:
                await self._pg(
                    "pg_rewind",
                    "-D",
                    str(self.data_dir),
                    f"--source-server={source_info}",
                    timeout=600,
                    env={"PGPASSWORD": self.auth.password},
                )
                return
            except NodeError as exc:
                last_error = exc
                if "another postmaster" not in str(exc) and "lock file" not in str(exc):
                    break
                await asyncio.sleep(REWIND_RETRY_S)
        raise NodeError(f"{last_error} (source {redacted(source_info)})")

    async def checkpoint_lsn(self) -> str:
        result = await self._pg("pg_controldata", str(self.data_dir), timeout=30)
        for line in result.stdout.splitlines():
            if line.startswith("Latest checkpoint location:"):
                return line.split(":", 1)[1].strip()
        raise NodeError(f"{self.node.name}: pg_controldata shows no checkpoint location")

    async def clone(self, source: NodeConfig) -> None:
        if await self.is_running():
            raise NodeError(f"{self.node.name}: stop the server before cloning over it")
        aside = self.data_dir.with_name(self.data_dir.name + ".pghad-old")
        shutil.rmtree(aside, ignore_errors=True)
        if self.data_dir.exists():
            user = self._user()
            self.data_dir.rename(aside)
        else:
            user = self._user() if self.os_user else owner_of(self.data_dir.parent)
        self.data_dir.mkdir(mode=0o700)
        chown_to(self.data_dir, user)
        conninfo = replication_conninfo(source, self.auth, self.node.name, with_password=False)
        try:
            await self._pg(
                "pg_basebackup",
                "-D",
                str(self.data_dir),
                "-d",
                conninfo,
                "-c",
                "fast",
                "-X",
                "stream",
                timeout=3600,
                env={"PGPASSWORD": self.auth.replication_password},
            )
        except NodeError:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if aside.exists():
                aside.rename(self.data_dir)
            raise
        # A clone is always a standby: without the signal file it would start as a second primary.
        signal_file = self.data_dir / "standby.signal"
        signal_file.touch()
        chown_to(signal_file, user)
        shutil.rmtree(aside, ignore_errors=True)
