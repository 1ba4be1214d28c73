"""The node driver interface shared by the local and docker drivers."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pghad.config.model import NodeConfig
from pghad.decide.observation import ControlData, ServerState, Witness


class Role(StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"


class NodeDriver(Protocol):
    """What needs a shell on a node. Promotion and replication settings go over SQL instead."""

    @property
    def node(self) -> NodeConfig: ...

    async def is_running(self) -> bool:
        """True while the node's postmaster is alive (a zombie or a missing process is not)."""
        ...

    async def server_state(self) -> ServerState:
        """Running, stopped, or without a usable data directory, as the host sees it."""
        ...

    async def start(self, role: Role, primary: NodeConfig | None = None) -> None:
        """Start the server as `role`; a standby streams from `primary`."""
        ...

    async def stop(self, mode: str = "fast") -> None:
        """Stop the server cleanly (fast: roll back sessions, write a shutdown checkpoint)."""
        ...

    async def fence(self) -> str:
        """Make sure the server cannot accept writes, at once; return what was done."""
        ...

    async def rewind(self, source: NodeConfig) -> None:
        """pg_rewind the stopped server onto `source`'s timeline."""
        ...

    async def clone(self, source: NodeConfig) -> None:
        """Replace the data directory with a fresh pg_basebackup of `source`."""
        ...

    async def checkpoint_lsn(self) -> str:
        """The stopped server's latest checkpoint location (pg_controldata)."""
        ...

    async def control_data(self) -> ControlData:
        """The stopped server's pg_control: how it stopped (in recovery or as a primary), its
        timeline and checkpoint (pg_controldata, as the data directory's owner)."""
        ...

    def witness(self) -> Witness | None:
        """The node's host's own view of the other node (an agent), or None."""
        ...
