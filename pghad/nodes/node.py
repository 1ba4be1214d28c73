"""The node seam: one object per node for everything pghad does to it.

`probe` and the SQL actions go over a connection; `process` is the node driver (start, stop,
fence, rewind, clone), which needs the node's host. pghad.testing has an in-memory FakeNode with
the same shape, so the loop, the procedures and the executor run in tests without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from pghad.config.model import AuthConfig, NodeConfig
from pghad.decide.observation import ControlData, NodeObservation, ServerState
from pghad.nodes import sql as sqlops
from pghad.nodes.base import NodeDriver
from pghad.nodes.probe import probe_node
from pghad.nodes.resolver import Resolver


class Node(Protocol):
    @property
    def config(self) -> NodeConfig: ...

    @property
    def process(self) -> NodeDriver: ...

    @property
    def name(self) -> str: ...

    async def probe(self, timeout: float) -> NodeObservation:
        """One observation within `timeout`; a hung or slow node is unreachable."""
        ...

    async def promote(self, archive: bool = False) -> bool:
        """End recovery; True once the node is writable. `archive`: commits wait for the
        synchronous WAL archive from the first one on."""
        ...

    async def set_synchronous(self, standby: str | None, archive: bool = False) -> None: ...

    async def make_read_only(self) -> None:
        """Refuse writes and end client sessions (the fence when the driver cannot stop it)."""
        ...

    async def checkpoint(self) -> None: ...


async def read_control(driver: NodeDriver, timeout: float) -> ControlData | None:
    """A stopped server's pg_control, or None when its driver cannot read it in time (the
    decision then goes by memory, cautiously)."""
    try:
        return await asyncio.wait_for(driver.control_data(), timeout)
    except Exception:  # evidence that cannot be had is no evidence; it never fails the probe
        return None


async def with_driver_word(
    sql_probe: Awaitable[NodeObservation], driver: NodeDriver, timeout: float
) -> NodeObservation:
    """The SQL probe's answer with what the driver says beside it: the server's state, the
    agent's witness, and a stopped server's pg_control. Both are asked at once."""
    sql = asyncio.ensure_future(sql_probe)
    try:
        server = await asyncio.wait_for(driver.server_state(), timeout)
    except Exception:  # a driver that cannot tell must never cost the SQL probe
        server = ServerState.UNKNOWN
    observed = await sql
    control = None
    if server is ServerState.STOPPED and not observed.reachable:
        control = await read_control(driver, timeout)
    return dataclasses.replace(observed, server=server, witness=driver.witness(), control=control)


@dataclass
class PgNode:
    config: NodeConfig
    auth: AuthConfig
    process: NodeDriver
    resolver: Resolver | None = None

    def __post_init__(self) -> None:
        self.resolver = self.resolver or Resolver(self.config.host, self.config.port)

    @property
    def name(self) -> str:
        return self.config.name

    async def probe(self, timeout: float) -> NodeObservation:
        return await with_driver_word(
            probe_node(self.config, self.auth, timeout, self.resolver), self.process, timeout
        )

    async def promote(self, archive: bool = False) -> bool:
        return await sqlops.promote(self.config, self.auth, archive)

    async def set_synchronous(self, standby: str | None, archive: bool = False) -> None:
        await sqlops.set_synchronous_standby(self.config, self.auth, standby, archive)

    async def make_read_only(self) -> None:
        await sqlops.make_read_only(self.config, self.auth)

    async def checkpoint(self) -> None:
        await sqlops.checkpoint(self.config, self.auth)
