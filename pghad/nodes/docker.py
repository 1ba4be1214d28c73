"""The docker node driver: a node is a container of the official PostgreSQL image.

PostgreSQL is the container's main process, so stopping the server is stopping the container.
Programs that need the data directory while the server is down (pg_rewind, pg_basebackup,
pg_controldata) run in a one-off container that shares the node's volumes and network.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import shlex
import struct
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pghad.config.model import AuthConfig, DockerNodeConfig, NodeConfig
from pghad.decide.observation import (
    ControlData,
    ServerState,
    Witness,
    format_lsn,
    parse_controldata,
)
from pghad.errors import NodeError, SetupError
from pghad.nodes import nodeconf
from pghad.nodes.base import Role
from pghad.nodes.conninfo import admin_conninfo, clone_application_name, replication_conninfo

STOP_TIMEOUT_S = 30
DEFAULT_SOCKET = "/var/run/docker.sock"
ONE_OFF_LABEL = "pghad.one-off"  # the node a throwaway container works on


def docker_client() -> Any:
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a runtime dependency
        raise SetupError("the docker driver needs the docker package") from exc
    if not os.environ.get("DOCKER_HOST") and not Path(DEFAULT_SOCKET).exists():
        raise SetupError(
            f"cannot reach the Docker engine: no {DEFAULT_SOCKET} (mount it, or set DOCKER_HOST)"
        )
    client = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        if client is not None:
            client.close()
        raise SetupError(
            f"cannot reach the Docker engine ({exc}): mount /var/run/docker.sock or set DOCKER_HOST"
        ) from exc
    return client


def checkpoint_location(pg_control: bytes) -> int:
    """ControlFileData.checkPoint: after system_identifier, two versions, the state and the
    time, at byte 32, in the machine's byte order (little-endian here)."""
    (location,) = struct.unpack_from("<Q", pg_control, 32)
    return int(location)


@dataclass
class DockerDriver:
    node: DockerNodeConfig
    auth: AuthConfig
    client: Any
    # Engine calls block: they run in this node's own threads, so a slow engine answer about one
    # container never holds up the other node, nor asyncio's shared executor.
    _executor: ThreadPoolExecutor = field(init=False, repr=False)
    _status: Future[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._executor = ThreadPoolExecutor(2, f"docker-{self.node.name}")

    @property
    def container_name(self) -> str:
        return self.node.container or self.node.name

    @property
    def data_dir(self) -> PurePosixPath:
        return PurePosixPath(str(self.node.data_dir))

    def _container(self) -> Any:
        return self.client.containers.get(self.container_name)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def is_running(self) -> bool:
        container = await self._call(self._container)
        await self._call(container.reload)
        return bool(container.status == "running")

    def _read_status(self) -> str:
        container = self._container()
        container.reload()
        return str(container.status)

    def witness(self) -> Witness | None:
        return None  # no agent: pghad's host is the only observer

    async def server_state(self) -> ServerState:
        # One status call at a time: a probe whose deadline passed leaves its call to the next.
        if self._status is None or self._status.done():
            self._status = self._executor.submit(self._read_status)
        try:
            status = await asyncio.wrap_future(self._status)
        except Exception:  # the engine or the container cannot be read: say so, do not guess
            return ServerState.UNKNOWN
        if status == "paused":
            return ServerState.FROZEN
        return ServerState.RUNNING if status == "running" else ServerState.STOPPED

    async def _one_off(self, command: str, env: dict[str, str] | None = None) -> str:
        """Run `command` as postgres in a throwaway container with the node's volumes."""
        await self._call(self._remove_leftovers)
        container = await self._call(self._container)
        networks = list(container.attrs["NetworkSettings"]["Networks"])
        try:
            output = await self._call(
                self.client.containers.run,
                container.image.id,
                ["bash", "-c", command],
                user="postgres",
                volumes_from=[container.id],
                network=networks[0] if networks else None,
                environment=env or {},
                remove=True,
                labels={ONE_OFF_LABEL: self.node.name},
                stdout=True,
                stderr=True,
                entrypoint=[],
            )
        except Exception as exc:
            program = command.split(maxsplit=1)[0]
            raise NodeError(f"{self.node.name}: {program} failed: {exc}") from exc
        return bytes(output).decode(errors="replace")

    def _node_conf(self, primary: NodeConfig | None) -> str:
        conninfo = replication_conninfo(primary, self.auth, self.node.name) if primary else None
        return nodeconf.render(self.node.model_copy(update={"host": "*"}), conninfo)

    def _node_conf_command(self, standby: bool) -> str:
        """Writes $PGHAD_NODE_CONF: the settings (a password among them) travel in the one-off's
        environment, never on its command line."""
        data = shlex.quote(str(self.data_dir))
        signal = f"touch {data}/standby.signal" if standby else f"rm -f {data}/standby.signal"
        include = shlex.quote(nodeconf.INCLUDE_LINE)
        return (
            f'printf %s "$PGHAD_NODE_CONF" > {data}/{nodeconf.NODE_CONF} && '
            f"chmod 600 {data}/{nodeconf.NODE_CONF} && {signal} && "
            f"(tail -n1 {data}/postgresql.conf | grep -qxF {include} || "
            f"echo {include} >> {data}/postgresql.conf) && "
            f"sed -i '/^primary_conninfo/d' {data}/postgresql.auto.conf"
        )

    async def start(self, role: Role, primary: NodeConfig | None = None) -> None:
        if await self.is_running():
            return
        if role is Role.STANDBY and primary is None:
            raise NodeError(f"{self.node.name}: a standby needs a primary to stream from")
        standby = role is Role.STANDBY
        conf = self._node_conf(primary if standby else None)
        await self._one_off(self._node_conf_command(standby), env={"PGHAD_NODE_CONF": conf})
        container = await self._call(self._container)
        await self._call(container.start)

    async def stop(self, mode: str = "fast") -> None:
        if not await self.is_running():
            return
        container = await self._call(self._container)
        # postgres: SIGINT = fast shutdown, SIGQUIT = immediate, SIGTERM = smart.
        signal = {"fast": "SIGINT", "immediate": "SIGQUIT", "smart": "SIGTERM"}[mode]
        await self._call(container.kill, signal=signal)
        await self._call(container.wait, timeout=STOP_TIMEOUT_S)

    async def fence(self) -> str:
        if not await self.is_running():
            return "not running"
        container = await self._call(self._container)
        await self._call(container.kill)
        return "container killed"

    async def rewind(self, source: NodeConfig) -> None:
        if await self.is_running():
            raise NodeError(f"{self.node.name}: stop the container before pg_rewind")
        conninfo = admin_conninfo(source, self.auth, with_password=False)
        data = shlex.quote(str(self.data_dir))
        # The server ran as PID 1 of its container: its postmaster.pid names PID 1, which always
        # exists in the one-off container. The node's container is stopped, so the file is stale.
        await self._one_off(
            f"rm -f {data}/postmaster.pid && pg_rewind -D {data} "
            f"--source-server={shlex.quote(conninfo)}",
            env={"PGPASSWORD": self.auth.password},
        )

    def _remove_leftovers(self) -> None:
        """One-off containers of this node that a daemon killed mid-operation left running (a
        copy or a rewind goes on without it): removed before the next one touches the data."""
        leftovers = {"label": f"{ONE_OFF_LABEL}={self.node.name}"}
        for container in self.client.containers.list(filters=leftovers):
            container.remove(force=True)

    async def clone(self, source: NodeConfig) -> None:
        if await self.is_running():
            raise NodeError(f"{self.node.name}: stop the container before cloning over it")
        conninfo = replication_conninfo(
            source, self.auth, clone_application_name(self.node.name), with_password=False
        )
        data = shlex.quote(str(self.data_dir))
        new = shlex.quote(f"{self.data_dir}/.pghad-clone")
        # The data directory is a volume's root and cannot be renamed: the copy is made beside
        # the old files, inside it, and replaces them only once it is complete.
        await self._one_off(
            f"set -e; rm -rf {new}; "
            f"pg_basebackup -D {new} -d {shlex.quote(conninfo)} -c fast -X stream; "
            f"touch {new}/standby.signal; "
            f"find {data} -mindepth 1 -maxdepth 1 ! -name .pghad-clone -exec rm -rf {{}} +; "
            f"find {new} -mindepth 1 -maxdepth 1 -exec mv -t {data} {{}} +; rmdir {new}",
            env={"PGPASSWORD": self.auth.replication_password},
        )

    async def checkpoint_lsn(self) -> str:
        # Copying pg_control out of the stopped container takes milliseconds; a one-off
        # container running pg_controldata about 0.3 s of a switchover's write pause.
        try:
            return format_lsn(await self._call(self._read_checkpoint)) or ""
        except Exception:  # an engine without the archive API, an unexpected pg_control
            pass
        output = await self._one_off(f"pg_controldata {shlex.quote(str(self.data_dir))}")
        for line in output.splitlines():
            if line.startswith("Latest checkpoint location:"):
                return line.split(":", 1)[1].strip()
        raise NodeError(f"{self.node.name}: pg_controldata shows no checkpoint location")

    async def control_data(self) -> ControlData:
        output = await self._one_off(f"LC_ALL=C pg_controldata {shlex.quote(str(self.data_dir))}")
        return parse_controldata(output)

    def _read_checkpoint(self) -> int:
        stream, _stat = self._container().get_archive(f"{self.data_dir}/global/pg_control")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.extractfile("pg_control")
            assert member is not None
            return checkpoint_location(member.read())
