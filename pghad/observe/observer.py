"""Probe every node at once: a slow node never delays the observation of another."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pghad.decide.observation import ClusterView, NodeObservation, ServerState

if TYPE_CHECKING:
    from pghad.nodes.node import Node


async def observe(nodes: Mapping[str, Node], timeout: float) -> ClusterView:
    found = await asyncio.gather(*(node.probe(timeout) for node in nodes.values()))
    return ClusterView({obs.name: obs for obs in found})


class Observer:
    """The loop's rounds of probes. A probe still waiting when a round must decide counts as no
    answer for that round and is not started again: the next round takes its result. While the
    primary is suspect, rounds come every few tenths of a second, not every probe timeout."""

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Task[NodeObservation]] = {}

    async def round(
        self, nodes: Mapping[str, Node], timeout: float, deadline: float
    ) -> ClusterView:
        current = {id(node) for node in nodes.values()}
        for key in [key for key in self._waiting if key not in current]:  # nodes of an old config
            self._waiting.pop(key).cancel()
        tasks = {}
        for name, node in nodes.items():
            task = self._waiting.pop(id(node), None)
            tasks[name] = task if task is not None else asyncio.ensure_future(node.probe(timeout))
        # The driver's word (cheap: /proc, or the shared heartbeat) for a probe that waits on.
        states = {
            name: asyncio.ensure_future(node.process.server_state()) for name, node in nodes.items()
        }
        for state in states.values():  # read below only for a probe that waits on
            state.add_done_callback(_retrieve)
        await asyncio.wait([*tasks.values(), *states.values()], timeout=deadline)
        found = {}
        for name, task in tasks.items():
            state = states[name]
            if not state.done():
                state.cancel()
            if task.done():
                found[name] = task.result()
                continue
            self._waiting[id(nodes[name])] = task
            server = ServerState.UNKNOWN
            if state.done() and not state.cancelled() and state.exception() is None:
                server = state.result()
            found[name] = NodeObservation(
                name,
                False,
                error=f"no answer within {deadline:g} s (still waiting)",
                server=server,
                witness=nodes[name].process.witness(),
            )
        return ClusterView(found)

    async def close(self) -> None:
        for task in self._waiting.values():
            task.cancel()
        await asyncio.gather(*self._waiting.values(), return_exceptions=True)
        self._waiting.clear()


def _retrieve(task: asyncio.Future[ServerState]) -> None:
    """The driver's word goes unread when the probe answered: its error is not worth a warning."""
    if not task.cancelled():
        task.exception()
