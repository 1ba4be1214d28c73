"""Probe every node at once: a slow node never delays the observation of another."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .observation import ClusterView

if TYPE_CHECKING:
    from pghad.nodes.node import Node


async def observe(nodes: Mapping[str, Node], timeout: float) -> ClusterView:
    found = await asyncio.gather(*(node.probe(timeout) for node in nodes.values()))
    return ClusterView({obs.name: obs for obs in found})
