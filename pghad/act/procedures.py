"""Operator procedures (switchover, failover, failback) as sequences of checked steps.

Each step either succeeds or raises with a message saying which step failed and what state the
cluster was left in. Refusals (OperationRefused) happen before anything is changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import psycopg

from pghad.act.executor import Executor, FenceFailed, rejoin
from pghad.config.model import Config
from pghad.decide.codes import DecisionCode
from pghad.decide.observation import ClusterView, parse_lsn
from pghad.decide.policy import refuse_promotion
from pghad.decide.promotions import PromotionCause
from pghad.errors import NodeError, OperationRefused
from pghad.nodes.base import Role
from pghad.nodes.sql import PROMOTE_WAIT_S
from pghad.observe.observer import observe

if TYPE_CHECKING:
    from pghad.nodes.node import Node

# Writes the promotion of (new, old) to disk before it is made; raises if it cannot.
Intend = Callable[[str, str | None], Awaitable[None]]

RECEIVE_WAIT_S = 10.0
STREAM_WAIT_S = 60.0
POLL_S = 0.02


@dataclass(frozen=True)
class OperationResult:
    operation: str
    new_primary: str
    old_primary: str
    duration_s: float
    message: str
    cause: PromotionCause
    details: dict[str, object] = field(default_factory=dict)


class Procedures:
    def __init__(self, config: Config, nodes: Mapping[str, Node], executor: Executor):
        self.config = config
        self.nodes = nodes
        self.executor = executor

    async def observe(self) -> ClusterView:
        return await observe(self.nodes, self.config.cluster.probe_timeout)

    # ---- switchover ------------------------------------------------------------------------

    async def switchover(
        self, intend: Intend, cause: PromotionCause = PromotionCause.SWITCHOVER
    ) -> OperationResult:
        view = await self.observe()
        primary, standby = self._healthy_pair(view)
        return await self._switch(primary, standby, cause, intend)

    def _healthy_pair(self, view: ClusterView) -> tuple[str, str]:
        writable = view.writable()
        if len(writable) != 1:
            down = [n for n, o in view.nodes.items() if not o.reachable]
            raise OperationRefused(
                "a switchover needs exactly one primary and a healthy standby; "
                f"writable nodes: {writable or 'none'}, unreachable: {down or 'none'}"
            )
        primary = writable[0]
        standby = self.config.other(primary).name
        replica = view[primary].replica(standby)
        if not view[standby].is_standby or replica is None or not replica.streaming:
            raise OperationRefused(
                f"{standby} is not streaming from {primary} "
                f"({view[standby].error or 'not in pg_stat_replication'}); "
                "a switchover would lose data: wait until it streams"
            )
        return primary, standby

    async def _switch(
        self, primary: str, standby: str, cause: PromotionCause, intend: Intend
    ) -> OperationResult:
        started = time.monotonic()
        old = self.nodes[primary]
        # On disk before anything changes (and outside the write pause): from here on the old
        # primary is never started again as a primary before the promotion has settled.
        await intend(standby, primary)
        # A checkpoint first makes the shutdown checkpoint (and the write pause) short.
        await old.checkpoint()
        writes_stopped = time.monotonic()
        await old.process.stop("fast")
        final_lsn = await old.process.checkpoint_lsn()
        try:
            await self._wait_received(standby, final_lsn)
            promoted_in_time = await self.nodes[standby].promote(self.executor.archive_sync)
        except (NodeError, psycopg.Error, OSError) as exc:
            raise NodeError(await self._put_back(primary, standby, exc)) from exc
        if not promoted_in_time:
            # The promote request was made: it may still take effect, so the old primary is not
            # started again beside it. The daemon finishes the failover (or an operator).
            raise NodeError(
                f"step promote: {standby} did not leave recovery within {PROMOTE_WAIT_S:g} s; "
                "its promotion "
                f"may still take effect, so {primary} stays stopped (it awaits its rejoin): "
                f"the daemon promotes {standby} when it can"
            )
        promoted = time.monotonic()
        method = await rejoin(old, self.nodes[standby])
        return OperationResult(
            operation=cause.value,
            new_primary=standby,
            old_primary=primary,
            duration_s=round(time.monotonic() - started, 3),
            message=f"{standby} is the primary; {primary} follows it as a standby",
            cause=cause,
            details={
                "write_pause_s": round(promoted - writes_stopped, 3),
                "final_lsn": final_lsn,
                "rejoin": method,
            },
        )

    async def _put_back(self, primary: str, standby: str, error: Exception) -> str:
        """Undo a switchover that failed before the standby became primary."""
        what = f"the switchover failed ({error})"
        try:
            # Whatever the standby did with the promote request, it must not become writable
            # beside the restarted primary: stop it, restart the primary, then the standby.
            await self.nodes[standby].process.fence()
            await self.nodes[primary].process.start(Role.PRIMARY)
        except NodeError as exc:
            return f"{what}; putting {primary} back failed too ({exc}): start it by hand"
        try:
            await self.nodes[standby].process.start(Role.STANDBY, self.nodes[primary].config)
        except NodeError as exc:
            return f"{what}; {primary} is the primary again, {standby} did not restart ({exc})"
        return f"{what}; nothing changed: {primary} is the primary again, {standby} its standby"

    async def _wait_received(self, standby: str, final_lsn: str) -> None:
        """The standby must hold the stopped primary's shutdown checkpoint before promotion."""
        target = parse_lsn(final_lsn)
        assert target is not None
        deadline = time.monotonic() + RECEIVE_WAIT_S
        while time.monotonic() < deadline:
            obs = await self.nodes[standby].probe(self.config.cluster.probe_timeout)
            if obs.receive_lsn is not None and obs.receive_lsn > target:
                return
            await asyncio.sleep(POLL_S)
        raise NodeError(
            f"step wait-for-WAL: {standby} did not receive the primary's final WAL "
            f"({final_lsn}) within {RECEIVE_WAIT_S:g} s"
        )

    # ---- failover --------------------------------------------------------------------------

    async def failover(
        self, primary: str | None, eligible: bool, force: bool, intend: Intend
    ) -> OperationResult:
        view = await self.observe()
        if primary is not None and view[primary].writable:
            return await self.switchover(intend, cause=PromotionCause.MANUAL)
        writable = view.writable()
        if writable:
            raise OperationRefused(f"{writable[0]} is writable but is not the recorded primary")
        candidates = [n for n, o in view.nodes.items() if o.is_standby and n != primary]
        if not candidates:
            raise OperationRefused(
                "no reachable standby to promote: "
                + "; ".join(f"{n}: {o.error or 'not a standby'}" for n, o in view.nodes.items())
            )
        standby = candidates[0]
        refusal = refuse_promotion(view, eligible, standby)
        if refusal is not None and not (force and refusal.code is DecisionCode.STANDBY_INELIGIBLE):
            raise OperationRefused(refusal.reason)
        started = time.monotonic()
        try:
            promoted = await self.executor.fence_and_promote(
                standby, primary, force=force, intend=partial(intend, standby, primary)
            )
        except FenceFailed as exc:
            raise OperationRefused(str(exc)) from exc
        return OperationResult(
            operation="failover",
            new_primary=standby,
            old_primary=primary or "",
            duration_s=round(time.monotonic() - started, 3),
            message=f"{standby} promoted" + (" (forced)" if force and not eligible else ""),
            cause=PromotionCause.MANUAL,
            details={"fence": promoted.fence.detail, "forced": force and not eligible},
        )

    # ---- failback --------------------------------------------------------------------------

    async def failback(self, intend: Intend, pending_rejoin: bool = False) -> OperationResult:
        """`pending_rejoin`: the preferred node is a fenced former primary awaiting rejoin."""
        preferred = self.config.preferred_primary
        view = await self.observe()
        if view[preferred].writable:
            raise OperationRefused(f"{preferred} is already the primary: nothing to fail back")
        if not view[preferred].reachable and not pending_rejoin:
            raise OperationRefused(
                f"{preferred} is down ({view[preferred].error}): start it, or let auto_rejoin "
                "bring it back as a standby, then retry the failback"
            )
        current = self.config.other(preferred).name
        if not view[current].writable:
            raise OperationRefused(
                f"{current} is not a primary ({view[current].error or 'in recovery'}): "
                "there is nothing to fail back from"
            )
        started = time.monotonic()
        replica = view[current].replica(preferred)
        rejoined = None
        if replica is None or not replica.streaming:
            rejoined = await rejoin(self.nodes[preferred], self.nodes[current])
        await self._wait_streaming(current, preferred)
        result = await self._switch(current, preferred, PromotionCause.FAILBACK, intend)
        return OperationResult(
            operation="failback",
            new_primary=preferred,
            old_primary=current,
            duration_s=round(time.monotonic() - started, 3),
            message=f"{preferred} is the primary again; {current} follows it as a standby",
            cause=PromotionCause.FAILBACK,
            details={**result.details, "rejoined_first": rejoined},
        )

    async def _wait_streaming(self, primary: str, standby: str) -> None:
        deadline = time.monotonic() + STREAM_WAIT_S
        while time.monotonic() < deadline:
            obs = await self.nodes[primary].probe(self.config.cluster.probe_timeout)
            replica = obs.replica(standby)
            if replica is not None and replica.streaming:
                return
            await asyncio.sleep(0.1)
        raise NodeError(
            f"step wait-for-streaming: {standby} did not stream from {primary} within "
            f"{STREAM_WAIT_S:g} s; nothing was switched"
        )
