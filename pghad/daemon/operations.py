"""The one owner of actions: a queue of typed requests, at most one running per lane, backoff.

Automatic decisions, API operations, the trigger file, rejoins, restarts and backups all enter
here. The loop starts queued requests, and collects finished ones at the start of a round
(before it observes), so a result is never judged against an observation older than itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pghad.act.requests import Act, Lane, Request, Result, describe, lane_of
from pghad.decide.model import Action
from pghad.errors import OperationBusy, OperationRefused

BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 60.0


@dataclass
class Entry:
    request: Request
    future: asyncio.Future[Result]
    task: asyncio.Task[Result] | None = None


@dataclass
class Backoff:
    failures: int = 0
    not_before: float = 0.0
    announced: bool = False  # the hold was reported once


@dataclass
class Operations:
    queue: deque[Entry] = field(default_factory=deque)
    running: dict[Lane, Entry] = field(default_factory=dict)
    backoff: dict[str, Backoff] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def owner(self, lane: Lane = Lane.CLUSTER) -> Request | None:
        """The request that owns `lane`: running, or queued to run."""
        entry = self.running.get(lane) or next(
            (e for e in self.queue if lane_of(e.request) is lane), None
        )
        return entry.request if entry else None

    def current(self, lane: Lane = Lane.CLUSTER) -> str | None:
        """The operation that owns `lane`, by name."""
        request = self.owner(lane)
        return describe(request) if request is not None else None

    def busy(self, lane: Lane = Lane.CLUSTER) -> bool:
        return self.current(lane) is not None

    def pending_actions(self) -> list[Action]:
        """Every action queued or running, in any lane."""
        entries = [*self.running.values(), *self.queue]
        return [a for e in entries if isinstance(e.request, Act) for a in e.request.actions]

    def submit(self, request: Request) -> asyncio.Future[Result]:
        """Queue a request; refused at once when its lane is taken."""
        running = self.current(lane_of(request))
        if running is not None:
            raise OperationBusy(f"{running} is running; retry when it has finished")
        entry = Entry(request, asyncio.get_running_loop().create_future())
        self.queue.append(entry)
        self.wake.set()
        return entry.future

    def start_queued(self, run: Callable[[Request], Awaitable[Result]]) -> list[Request]:
        started = []
        for entry in list(self.queue):
            lane = lane_of(entry.request)
            if lane in self.running:
                continue
            self.queue.remove(entry)
            entry.task = asyncio.ensure_future(run(entry.request))
            entry.task.add_done_callback(lambda _task: self.wake.set())
            self.running[lane] = entry
            started.append(entry.request)
        return started

    def collect(self) -> list[Entry]:
        """Finished entries, removed from their lanes; the caller resolves their futures."""
        done = [e for e in self.running.values() if e.task is not None and e.task.done()]
        for entry in done:
            del self.running[lane_of(entry.request)]
        return done

    # ---- backoff: one place for every retried action -----------------------------------------

    def held_for(self, key: str, now: float) -> float:
        """Seconds until `key` may run again (0 when it may run now)."""
        entry = self.backoff.get(key)
        return max(0.0, entry.not_before - now) if entry else 0.0

    def record(self, key: str, ok: bool, now: float, always: bool = False) -> float:
        """Note an attempt; returns the backoff it earned. `always`: back off even on success
        (an action that should have fixed something for good, like a rejoin or a fresh copy).
        """
        entry = self.backoff.setdefault(key, Backoff())
        if ok and not always:
            del self.backoff[key]
            return 0.0
        entry.failures = entry.failures + 1 if not ok else max(entry.failures, 1)
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** (entry.failures - 1))
        entry.not_before = now + delay
        entry.announced = False
        return delay

    async def cancel_all(self) -> None:
        tasks = [e.task for e in self.running.values() if e.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for entry in [*self.running.values(), *self.queue]:
            if not entry.future.done():
                entry.future.set_exception(OperationRefused("the daemon is stopping"))
                entry.future.exception()  # retrieved: no "never retrieved" warning
        self.running.clear()
        self.queue.clear()
