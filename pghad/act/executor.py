"""Carry out decided actions through the nodes; report each as an outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from pghad.decide import sync_names
from pghad.decide.model import (
    Action,
    Fence,
    Promote,
    Rejoin,
    SetSynchronous,
    StartPrimary,
    StartStandby,
    action_name,
)
from pghad.decide.observation import ServerState
from pghad.errors import NodeError
from pghad.nodes.base import Role

if TYPE_CHECKING:
    from pghad.nodes.node import Node

FENCE_BOUND_S = 5.0
SYNC_FENCE_WAIT_S = 1.5


@dataclass(frozen=True)
class Outcome:
    action: str
    node: str
    ok: bool
    duration_s: float
    detail: str
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FenceResult:
    """What fencing a node did: `fenced` is False when it was left as it was."""

    node: str
    fenced: bool
    detail: str


class Executor:
    def __init__(
        self, nodes: Mapping[str, Node], synchronous: bool, archive_sync: bool = False
    ) -> None:
        self.nodes = nodes
        self.synchronous = synchronous
        self.archive_sync = archive_sync  # a new primary's commits wait for the WAL archive

    async def run(self, action: Action) -> Outcome:
        started = time.monotonic()
        node = action.primary if isinstance(action, SetSynchronous) else action.node
        try:
            detail, fields = await self._dispatch(action)
            ok = True
        except (NodeError, psycopg.Error, OSError, TimeoutError) as exc:
            detail, ok = f"{type(exc).__name__}: {exc}", False
            fields = {"fence": vars(exc.fence)} if isinstance(exc, FenceFailed) else {}
        duration = round(time.monotonic() - started, 3)
        return Outcome(action_name(action), node, ok, duration, detail, fields)

    async def _dispatch(self, action: Action) -> tuple[str, dict[str, object]]:
        match action:
            case Promote():
                return await self._promote(action)
            case Fence():
                result = await self.fence(action.node)
                if not result.fenced:
                    raise FenceFailed(result, result.detail)
                return result.detail, {"fence": vars(result)}
            case Rejoin():
                method = await rejoin(self.nodes[action.node], self.nodes[action.primary])
                detail = f"{action.node} rejoined as a standby of {action.primary} via {method}"
                return detail, {"method": method}
            case StartStandby():
                method = await start_standby(self.nodes[action.node], self.nodes[action.primary])
                return f"{action.node} started as a standby of {action.primary}", {"method": method}
            case StartPrimary():
                await self.nodes[action.node].process.start(Role.PRIMARY)
                return f"{action.node} started again as the primary", {}
            case SetSynchronous():
                await self.nodes[action.primary].set_synchronous(action.standby, action.archive)
                value = sync_names.render(action.standby, action.archive)
                return f"synchronous_standby_names = {value or 'empty'}", {}

    async def fence(self, name: str) -> FenceResult:
        """Stop the node through its driver; fall back to SQL read-only if the driver fails."""
        node = self.nodes[name]
        try:
            done = await asyncio.wait_for(node.process.fence(), FENCE_BOUND_S)
            return FenceResult(name, True, done)
        except (NodeError, OSError, TimeoutError) as exc:
            driver_error = str(exc) or type(exc).__name__
        try:
            await node.make_read_only()
        except (psycopg.Error, OSError, NodeError) as exc:
            return FenceResult(name, False, f"not fenced: driver: {driver_error}; SQL: {exc}")
        # default_transaction_read_only is advisory (a session may turn it off): it narrows what
        # the node takes, but the node is not fenced, and a fence action is retried.
        return FenceResult(
            name,
            False,
            f"not fenced: driver: {driver_error}; made read-only over SQL meanwhile (advisory)",
        )

    async def _promote(self, action: Promote) -> tuple[str, dict[str, object]]:
        if self.synchronous and not action.wait_for_fence:
            # Its host does not answer: by the timing model it has fenced itself already.
            fenced = FenceResult(action.old_primary, False, "host silent: not waited for")
        elif self.synchronous:
            # Synchronous: an unreachable old primary cannot acknowledge a commit alone, and an
            # agent fences it on its side; do not hold the promotion for its driver's timeouts.
            try:
                fenced = await asyncio.wait_for(self.fence(action.old_primary), SYNC_FENCE_WAIT_S)
            except TimeoutError:
                fenced = FenceResult(
                    action.old_primary, False, f"no answer within {SYNC_FENCE_WAIT_S:g} s"
                )
        else:
            fenced = await self.fence(action.old_primary)
        if not fenced.fenced and not self.synchronous:
            # In synchronous mode the old primary cannot acknowledge a commit without this
            # standby, so promoting is safe and it is fenced on return. Asynchronously it could
            # go on taking writes that the new primary never sees.
            raise FenceFailed(
                fenced,
                f"not promoting: the old primary {fenced.node} could not be fenced "
                f"({fenced.detail}) and replication is asynchronous, so it may still take "
                "writes; fence it by hand, then fail over with force=true",
            )
        fence_done = time.monotonic()
        if not await self.nodes[action.node].promote(self.archive_sync):
            raise NodeError(f"pg_promote on {action.node} did not finish within 30 s")
        return (
            f"{action.node} promoted; old primary {action.old_primary}: {fenced.detail}",
            {"fence": vars(fenced), "promote_s": round(time.monotonic() - fence_done, 3)},
        )


class FenceFailed(NodeError):
    def __init__(self, fence: FenceResult, message: str) -> None:
        super().__init__(message)
        self.fence = fence


async def rejoin(node: Node, source: Node) -> str:
    """Stop the node, rewind it onto `source`, start it as a standby; a fresh copy when needed.

    The copy (pg_basebackup) is taken when the data directory is gone, when pg_rewind fails, or
    when the rewound server does not start.
    """
    await node.process.fence()
    if await node.process.server_state() is ServerState.NO_DATA:
        return await _clone_and_start(node, source, "the data directory is missing")
    try:
        await node.process.rewind(source.config)
    except NodeError as exc:
        return await _clone_and_start(node, source, f"pg_rewind failed: {exc}")
    try:
        await node.process.start(Role.STANDBY, source.config)
    except NodeError as exc:
        await node.process.fence()
        return await _clone_and_start(node, source, f"the rewound server did not start: {exc}")
    return "pg_rewind"


async def start_standby(node: Node, source: Node) -> str:
    if await node.process.server_state() is ServerState.NO_DATA:
        return await _clone_and_start(node, source, "the data directory is missing")
    await node.process.start(Role.STANDBY, source.config)
    return "start"


async def _clone_and_start(node: Node, source: Node, why: str) -> str:
    await node.process.clone(source.config)
    await node.process.start(Role.STANDBY, source.config)
    return f"pg_basebackup ({why})"
