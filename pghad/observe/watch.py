"""Hold a connection to the primary: when it drops, wake the loop at once instead of waiting."""

from __future__ import annotations

import asyncio

import psycopg

from pghad.config.model import AuthConfig, NodeConfig
from pghad.nodes.conninfo import admin_conninfo


class PrimaryWatch:
    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake
        self._task: asyncio.Task[None] | None = None
        self._node: str | None = None

    def follow(self, node: NodeConfig, auth: AuthConfig) -> None:
        """Watch `node` (the primary); a no-op while the same node is already watched."""
        if self._task is not None and not self._task.done() and self._node == node.name:
            return
        self.stop()
        self._node = node.name
        self._task = asyncio.create_task(self._watch(admin_conninfo(node, auth, connect_timeout=2)))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self, conninfo: str) -> None:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute("LISTEN pghad_watch")
                async for _note in conn.notifies():
                    pass
        except (psycopg.Error, OSError):
            pass
        self.wake.set()
