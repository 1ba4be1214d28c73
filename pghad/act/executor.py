"""Carry out decided actions through the nodes; report each as an outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
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
    action_target,
)
from pghad.decide.observation import ServerState
from pghad.errors import NodeError
from pghad.nodes.base import Role
from pghad.nodes.sql import PROMOTE_WAIT_S

if TYPE_CHECKING:
    from pghad.nodes.node import Node

FENCE_BOUND_S = 5.0
SYNC_FENCE_WAIT_S = 1.5


@dataclass(frozen=True)
class FenceResult:
    """What fencing a node did: `fenced` is False when it was left as it was."""

    node: str
    fenced: bool
    detail: str


@dataclass(frozen=True)
class Outcome:
    """What carrying out one action did."""

    action: Action
    ok: bool
    duration_s: float
    detail: str
    fence: FenceResult | None = None  # a fence, or a promotion's fence of the old primary
    method: str | None = None  # how a node came back: pg_rewind, start, pg_basebackup (why)
    promote_s: float | None = None  # from the fence's end to the new primary writable

    @property
    def name(self) -> str:
        return action_name(self.action)

    @property
    def node(self) -> str:
        return action_target(self.action)

    def event_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {}
        if self.fence is not None:
            fields["fence"] = asdict(self.fence)
        if self.method is not None:
            fields["method"] = self.method
        if self.promote_s is not None:
            fields["promote_s"] = self.promote_s
        return fields


@dataclass(frozen=True)
class Promoted:
    """A promotion made: the old primary's fence, and the promotion's own time."""

    fence: FenceResult
    promote_s: float


class Executor:
    def __init__(
        self, nodes: Mapping[str, Node], synchronous: bool, archive_sync: bool = False
    ) -> None:
        self.nodes = nodes
        self.synchronous = synchronous
        self.archive_sync = archive_sync  # a new primary's commits wait for the WAL archive

    async def run(self, action: Action) -> Outcome:
        started = time.monotonic()
        try:
            done = await self._dispatch(action)
        except (NodeError, psycopg.Error, OSError, TimeoutError) as exc:
            fence = exc.fence if isinstance(exc, FenceFailed) else None
            detail = f"{type(exc).__name__}: {exc}"
            return Outcome(action, False, _since(started), detail, fence=fence)
        return replace(done, duration_s=_since(started))

    async def _dispatch(self, action: Action) -> Outcome:
        match action:
            case Promote():
                promoted = await self.fence_and_promote(
                    action.node, action.old_primary, action.wait_for_fence
                )
                detail = (
                    f"{action.node} promoted; old primary {action.old_primary}: "
                    f"{promoted.fence.detail}"
                )
                return Outcome(
                    action, True, 0.0, detail, promoted.fence, promote_s=promoted.promote_s
                )
            case Fence():
                result = await self.fence(action.node)
                if not result.fenced:
                    raise FenceFailed(result, result.detail)
                return Outcome(action, True, 0.0, result.detail, result)
            case Rejoin():
                method = await rejoin(self.nodes[action.node], self.nodes[action.primary])
                detail = f"{action.node} rejoined as a standby of {action.primary} via {method}"
                return Outcome(action, True, 0.0, detail, method=method)
            case StartStandby():
                method = await start_standby(self.nodes[action.node], self.nodes[action.primary])
                detail = f"{action.node} started as a standby of {action.primary}"
                return Outcome(action, True, 0.0, detail, method=method)
            case StartPrimary():
                await self.nodes[action.node].process.start(Role.PRIMARY)
                return Outcome(action, True, 0.0, f"{action.node} started again as the primary")
            case SetSynchronous():
                await self.nodes[action.primary].set_synchronous(action.standby, action.archive)
                value = sync_names.render(action.standby, action.archive)
                return Outcome(action, True, 0.0, f"synchronous_standby_names = {value or 'empty'}")

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

    async def fence_and_promote(
        self,
        standby: str,
        old_primary: str | None,
        wait_for_fence: bool = True,
        force: bool = False,
        intend: Callable[[], Awaitable[None]] | None = None,
    ) -> Promoted:
        """Fence the old primary, then promote the standby: the one path of every failover,
        automatic or ordered. `intend` records the promotion on disk once it is going ahead;
        `force` promotes beside an old primary that could not be fenced, asynchronous or not.
        """
        fenced = await self._fence_old_primary(old_primary, wait_for_fence)
        if not fenced.fenced and not self.synchronous and not force:
            # In synchronous mode the old primary cannot acknowledge a commit without this
            # standby, so promoting is safe and it is fenced on return. Asynchronously it could
            # go on taking writes that the new primary never sees.
            raise FenceFailed(
                fenced,
                f"not promoting: the old primary {fenced.node} could not be fenced "
                f"({fenced.detail}) and replication is asynchronous, so it may still take "
                "writes; fence it by hand, then fail over with force=true",
            )
        if intend is not None:
            await intend()
        fence_done = time.monotonic()
        if not await self.nodes[standby].promote(self.archive_sync):
            raise NodeError(
                f"step promote: {standby} did not leave recovery within {PROMOTE_WAIT_S:g} s; "
                "its promotion may still take effect"
            )
        return Promoted(fenced, _since(fence_done))

    async def _fence_old_primary(self, old_primary: str | None, wait: bool) -> FenceResult:
        if old_primary is None:
            return FenceResult("", True, "no old primary")
        if self.synchronous and not wait:
            # Its host does not answer: by the timing model it has fenced itself already.
            return FenceResult(old_primary, False, "host silent: not waited for")
        if not self.synchronous:
            return await self.fence(old_primary)
        # Synchronous: an unreachable old primary cannot acknowledge a commit alone, and an
        # agent fences it on its side; do not hold the promotion for its driver's timeouts.
        try:
            return await asyncio.wait_for(self.fence(old_primary), SYNC_FENCE_WAIT_S)
        except TimeoutError:
            return FenceResult(old_primary, False, f"no answer within {SYNC_FENCE_WAIT_S:g} s")


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)


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
