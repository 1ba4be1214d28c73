"""An asyncio event loop on virtual time: waiting is free and every run is deterministic.

When nothing is ready, the loop jumps its clock to the next timer instead of blocking, so an
`asyncio.sleep(30)` costs nothing. Work sent to threads runs inline (no thread, no real time),
and `time.monotonic` reads the virtual clock while a simulation runs, so the daemon's own
deadlines (procedures, executor) count simulated seconds too.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
START = 1000.0
LEFTOVER_S = 1.0


class Stuck(RuntimeError):
    """Nothing is ready and no timer is due: the simulation waits for something that never comes."""


@dataclass
class VirtualClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Stuck("no timer is due and nothing is ready")
        self.clock.now += max(0.0, timeout)
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self.clock = clock

    def time(self) -> float:
        return self.clock.now

    def run_in_executor(  # type: ignore[override]
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def monotonic_from(clock: VirtualClock) -> Iterator[None]:
    original = time.monotonic
    time.monotonic = clock  # the daemon's deadlines read simulated seconds while it runs
    try:
        yield
    finally:
        time.monotonic = original


def run_virtual(main: Coroutine[Any, Any, T], clock: VirtualClock) -> T:
    loop = VirtualLoop(clock)
    try:
        with monotonic_from(clock):
            return loop.run_until_complete(main)
    finally:
        with monotonic_from(clock):
            _cancel_leftovers(loop)
        loop.close()


def _cancel_leftovers(loop: VirtualLoop) -> None:
    """Cancel what is left; a task still waiting on work the stopped world will never finish
    (it caught its cancellation) is abandoned after a simulated second."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=LEFTOVER_S))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.set_exception_handler(lambda _loop, _context: None)  # abandoned tasks go quietly
