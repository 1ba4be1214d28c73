"""A slow name lookup for one node never delays another node's, and never piles up."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pghad.errors import NodeError
from pghad.nodes import resolver as resolver_module
from pghad.nodes.resolver import Resolver


def test_a_hanging_lookup_is_bounded_reused_and_does_not_block_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    calls: list[str] = []

    def lookup(host: str, port: int) -> str:
        calls.append(host)
        if host == "stopped-container":
            release.wait(10)  # Docker's DNS for a stopped container: no answer for seconds
        return "10.0.0.7"

    monkeypatch.setattr(resolver_module, "_lookup", lookup)
    slow, fast = Resolver("stopped-container", 5432), Resolver("running-container", 5432)

    async def scenario() -> None:
        for _ in range(3):
            started = time.monotonic()
            results = await asyncio.gather(
                slow.address(0.3), fast.address(0.3), return_exceptions=True
            )
            assert isinstance(results[0], NodeError) and "longer than 0.3 s" in str(results[0])
            assert results[1] == "10.0.0.7"
            assert time.monotonic() - started < 0.6

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    assert calls.count("stopped-container") == 1  # one lookup in flight, reused by each probe
    assert asyncio.run(Resolver("127.0.0.1", 5432).address(0.1)) is None
