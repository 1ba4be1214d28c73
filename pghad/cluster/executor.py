"""Carry out decided actions with the node drivers and SQL; report each as an outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg

from pghad.config import Config, NodeConfig
from pghad.errors import NodeError
from pghad.nodes.base import NodeDriver, Role

from . import sqlops
from .decide import Action, Fence, Promote, Rejoin, SetSynchronous

FENCE_BOUND_S = 5.0


@dataclass(frozen=True)
class Outcome:
    action: str
    node: str
    ok: bool
    duration_s: float
    detail: str
    fields: dict[str, object] = field(default_factory=dict)


class Executor:
    def __init__(self, config: Config, drivers: Mapping[str, NodeDriver]) -> None:
        self.config = config
        self.drivers = drivers

    async def run(self, action: Action) -> Outcome:
        started = time.monotonic()
        name = type(action).__name__.lower()
        node = action.primary if isinstance(action, SetSynchronous) else action.node
        try:
            detail, fields = await self._dispatch(action)
            ok = True
        except (NodeError, psycopg.Error, OSError, TimeoutError) as exc:
            detail, fields, ok = f"{type(exc).__name__}: {exc}", {}, False
        return Outcome(name, node, ok, round(time.monotonic() - started, 3), detail, fields)

    async def _dispatch(self, action: Action) -> tuple[str, dict[str, object]]:
        match action:
            case Promote():
                return await self._promote(action)
            case Fence():
                return await self.fence(action.node), {}
            case Rejoin():
                return await self._rejoin(action)
            case SetSynchronous():
                await sqlops.set_synchronous_standby(
                    self.config.node(action.primary), self.config.auth, action.standby
                )
                return f"synchronous_standby_names = {action.standby or 'empty'}", {}

    async def fence(self, name: str) -> str:
        """Stop the node through its driver; fall back to SQL read-only if the driver fails."""
        try:
            return await asyncio.wait_for(self.drivers[name].fence(), FENCE_BOUND_S)
        except (NodeError, OSError, TimeoutError) as exc:
            driver_error = str(exc) or type(exc).__name__
        try:
            await sqlops.make_read_only(self.config.node(name), self.config.auth)
        except (psycopg.Error, OSError) as exc:
            raise NodeError(f"could not fence {name}: driver: {driver_error}; SQL: {exc}") from exc
        return f"made read-only over SQL (driver failed: {driver_error})"

    async def _promote(self, action: Promote) -> tuple[str, dict[str, object]]:
        try:
            fenced = await self.fence(action.old_primary)
        except NodeError as exc:
            # The old primary is unreachable both ways. In synchronous mode it cannot acknowledge
            # a commit without this standby, so promoting is still safe; it is fenced on return.
            fenced = f"not fenced ({exc})"
        fence_done = time.monotonic()
        promoted = await sqlops.promote(self.config.node(action.node), self.config.auth)
        if not promoted:
            raise NodeError(f"pg_promote on {action.node} did not finish within 30 s")
        return (
            f"{action.node} promoted; old primary {action.old_primary}: {fenced}",
            {"fence": fenced, "promote_s": round(time.monotonic() - fence_done, 3)},
        )

    async def _rejoin(self, action: Rejoin) -> tuple[str, dict[str, object]]:
        method = await rejoin(self.drivers[action.node], self.config.node(action.primary))
        detail = f"{action.node} rejoined as a standby of {action.primary} via {method}"
        return detail, {"method": method.split(" ")[0]}


async def rejoin(driver: NodeDriver, source: NodeConfig) -> str:
    """Stop the node, rewind it onto `source` (a fresh copy if rewind fails), start as standby."""
    await driver.fence()
    method = "pg_rewind"
    try:
        await driver.rewind(source)
    except NodeError as exc:
        method = f"pg_basebackup (pg_rewind failed: {exc})"
        await driver.clone(source)
    await driver.start(Role.STANDBY, source)
    return method
