"""The local node driver: pg_ctl, pg_rewind and pg_basebackup on this host, as the data owner."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

from pghad.config.model import AuthConfig, LocalNodeConfig, NodeConfig
from pghad.decide.observation import (
    ControlData,
    ServerState,
    Witness,
    format_lsn,
    parse_controldata,
)
from pghad.errors import NodeError
from pghad.nodes import nodeconf
from pghad.nodes.base import Role
from pghad.nodes.conninfo import (
    admin_conninfo,
    clone_application_name,
    redacted,
    replication_conninfo,
)
from pghad.system import files, procs
from pghad.system.commands import CommandResult, run_command
from pghad.system.runas import owner_of, prefix_for

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
CONTROLDATA_TIMEOUT_S = 30
FENCE_GRACE_S = 2.0
REWIND_ATTEMPTS = 20
REWIND_RETRY_S = 0.5


def _held_by_orphans(error: BaseException) -> bool:
    return isinstance(error, NodeError) and (
        "another postmaster" in str(error) or "lock file" in str(error)
    )


# pg_basebackup writes pg_control last: a directory without it is a copy stopped half way.
WHOLE_DATA_DIR = ("PG_VERSION", "global/pg_control")


@dataclass
class LocalDriver:
    node: LocalNodeConfig
    auth: AuthConfig
    bin_dir: Path
    os_user: str | None = field(default=None)
    log_path: Path | None = field(default=None)  # default: beside the data directory

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def log_file(self) -> Path:
        return self.log_path or self.data_dir.parent / f"{self.data_dir.name}-postgresql.log"

    def _user(self) -> str:
        if self.os_user:
            return self.os_user
        # A lost data directory is rebuilt for the owner of the directory that held it.
        return owner_of(self.data_dir if self.data_dir.exists() else self.data_dir.parent)

    def _owner_ids(self) -> tuple[int, int]:
        entry = pwd.getpwnam(self._user())
        return entry.pw_uid, entry.pw_gid

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
        # Off the loop: the files and /proc entries it reads are the PostgreSQL user's.
        return await asyncio.to_thread(procs.live_postmaster, self.data_dir) is not None

    def witness(self) -> Witness | None:
        return None  # no agent: pghad's host is the only observer

    async def server_state(self) -> ServerState:
        return await asyncio.to_thread(self._server_state)

    def _server_state(self) -> ServerState:
        pid = procs.live_postmaster(self.data_dir)
        if pid is not None:
            return ServerState.FROZEN if procs.is_frozen(pid) else ServerState.RUNNING
        if not all((self.data_dir / name).is_file() for name in WHOLE_DATA_DIR):
            return ServerState.NO_DATA
        return ServerState.STOPPED

    def _write_node_conf(self, primary: NodeConfig | None) -> None:
        """Node settings and the standby signal; no file here is followed if it is a link."""
        conninfo = replication_conninfo(primary, self.auth, self.node.name) if primary else None
        owner = self._owner_ids()
        text = nodeconf.render(self.node, conninfo)
        files.write_file(self.data_dir / nodeconf.NODE_CONF, text.encode(), owner)
        nodeconf.ensure_include(self.data_dir / "postgresql.conf", owner)
        nodeconf.strip_node_owned(self.data_dir / "postgresql.auto.conf", owner)
        signal_file = self.data_dir / "standby.signal"
        if primary is not None:
            files.ensure_file(signal_file, owner)
        else:
            files.remove(signal_file)

    async def start(self, role: Role, primary: NodeConfig | None = None) -> None:
        if await self.is_running():
            return
        if role is Role.STANDBY and primary is None:
            raise NodeError(f"{self.node.name}: a standby needs a primary to stream from")
        await procs.stop_writers_into(self.data_dir)
        await self._wait_for_orphans()
        procs.clear_stale_pidfile(self.data_dir)
        procs.clear_stale_socket_lock(self.node.socket_dir, self.node.port)
        self._write_node_conf(primary if role is Role.STANDBY else None)
        files.ensure_file(self.log_file, self._owner_ids())
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
        """Stop the server at once: immediate shutdown, SIGKILL if frozen or too slow.

        Only a process that is this data directory's postmaster is signalled: postmaster.pid is
        written by the PostgreSQL user, who could name any process in it.
        """
        if procs.data_dir_id(self.data_dir) is None:
            # A link (or nothing) where the data directory should be: no process can be told
            # to be this server's, so none is touched.
            return f"not running (no data directory at {self.data_dir}, or a link: nothing killed)"
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
        # Backends of a killed postmaster hold the directory for a moment: retry only that.
        retrying = AsyncRetrying(
            retry=retry_if_exception(_held_by_orphans),
            stop=stop_after_attempt(REWIND_ATTEMPTS),
            wait=wait_fixed(REWIND_RETRY_S),
            reraise=True,
        )
        await procs.stop_writers_into(self.data_dir)
        try:
            async for attempt in retrying:
                with attempt:
                    await self._wait_for_orphans()
                    procs.clear_stale_pidfile(self.data_dir)
                    await self._pg(
                        "pg_rewind",
                        "-D",
                        str(self.data_dir),
                        f"--source-server={source_info}",
                        timeout=600,
                        env={"PGPASSWORD": self.auth.password},
                    )
        except NodeError as exc:
            raise NodeError(f"{exc} (source {redacted(source_info)})") from exc

    async def checkpoint_lsn(self) -> str:
        lsn = format_lsn((await self.control_data()).checkpoint_lsn)
        if lsn is None:
            raise NodeError(f"{self.node.name}: pg_controldata shows no checkpoint location")
        return lsn

    async def control_data(self) -> ControlData:
        # LC_ALL=C: the labels parsed are pg_controldata's untranslated ones.
        result = await self._pg(
            "pg_controldata", str(self.data_dir), timeout=CONTROLDATA_TIMEOUT_S, env={"LC_ALL": "C"}
        )
        return parse_controldata(result.stdout)

    async def clone(self, source: NodeConfig) -> None:
        if await self.is_running():
            raise NodeError(f"{self.node.name}: stop the server before cloning over it")
        await procs.stop_writers_into(self.data_dir)
        aside = self.data_dir.with_name(self.data_dir.name + ".pghad-old")
        await asyncio.to_thread(shutil.rmtree, aside, ignore_errors=True)
        owner = self._owner_ids()
        if self.data_dir.exists():
            self.data_dir.rename(aside)
        conninfo = replication_conninfo(
            source, self.auth, clone_application_name(self.node.name), with_password=False
        )
        try:
            # pg_basebackup, run as the data owner, makes the directory itself: root never
            # creates or chowns a path inside a directory that user can write.
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
            await asyncio.to_thread(shutil.rmtree, self.data_dir, ignore_errors=True)
            if aside.exists():
                aside.rename(self.data_dir)
            raise
        # A clone is always a standby: without the signal file it would start as a second primary.
        files.ensure_file(self.data_dir / "standby.signal", owner)
        await asyncio.to_thread(shutil.rmtree, aside, ignore_errors=True)
