"""Applying a schedule's faults to the world: each fault starts, and a lasting one ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .network import CLIENT
from .schedule import HOSTS, Fault

if TYPE_CHECKING:
    from .world import World

Event = tuple[float, int, str, Callable[[], None]]


class Faults:
    def __init__(self, world: World) -> None:
        self.world = world
        self.events: list[Event] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def plan(self, start: float) -> None:
        for fault in self.world.schedule.faults:
            self._add(start + fault.at, fault.label, lambda f=fault: self._begin(f))
        self.events.sort(key=lambda e: (e[0], e[1]))

    def _add(self, at: float, text: str, action: Callable[[], None]) -> None:
        self.events.append((at, len(self.events), text, action))

    def apply_due(self, now: float) -> None:
        while self.events and self.events[0][0] <= now + 1e-9:
            _at, _order, text, action = self.events.pop(0)
            self.world.note(text)
            action()

    def _later(self, at: float, text: str, action: Callable[[], None]) -> None:
        self._add(at, text, action)
        self.events.sort(key=lambda e: (e[0], e[1]))

    def _begin(self, fault: Fault) -> None:
        world, now = self.world, self.world.clock()
        end = now + fault.duration
        server = world.servers.get(fault.target)
        match fault.kind:
            case "isolate":
                links = self._isolation(fault.target)
                for link in links:
                    self._link(fault, link, True)
                for index, link in enumerate(links):
                    heal = end + index * fault.value
                    self._later(heal, f"heal {'-'.join(link)}", self._heal(fault, link))
            case "cut" | "loss" | "delay" | "cut_one_way":
                sep = ">" if fault.kind == "cut_one_way" else "-"
                link = (fault.target.split(sep)[0], fault.target.split(sep)[1])
                self._link(fault, link, True)
                self._later(end, f"heal {fault.target}", self._heal(fault, link))
            case "freeze":
                assert server is not None
                if server.running:
                    server.frozen = True
                    self._later(end, f"thaw {fault.target}", lambda: self._thaw(fault.target))
            case "crash" | "lose_data":
                assert server is not None
                server.halt()
                server.has_data = server.has_data and fault.kind == "crash"
                world.checker.health[fault.target].down_by_fault = True
            case "stop":
                world.checker.health[fault.target].down_by_fault = True
                self._spawn(world.env.hosts.stop(fault.target))
            case "refuse":
                assert server is not None
                server.refusing = True
                self._later(end, f"{fault.target} accepts pghad again", lambda: self._accept(fault.target))
            case "kill_daemon":
                world.daemon.kill()
                self._later(end, "daemon restarted", world.daemon.start)
            case "kill_agent":
                world.env.agents[fault.target] = None
                self._later(end, f"agent {fault.target} restarted", self._agent(fault.target))
            case _:
                world.daemon.request(fault.kind)

    def _isolation(self, host: str) -> list[tuple[str, str]]:
        others = [h for h in (*HOSTS, CLIENT) if h != host]
        return [(host, other) for other in others]

    def _link(self, fault: Fault, link: tuple[str, str], on: bool) -> None:
        net = self.world.net
        src, dst = link
        both = fault.kind != "cut_one_way"
        for a, b in [(src, dst), (dst, src)] if both else [(src, dst)]:
            if fault.kind == "loss":
                net.lossy(a, b, fault.value, on)
            elif fault.kind == "delay":
                net.slow(a, b, fault.value, on)
            else:
                net.cut(a, b, on)

    def _heal(self, fault: Fault, link: tuple[str, str]) -> Callable[[], None]:
        return lambda: self._link(fault, link, False)

    def _thaw(self, name: str) -> None:
        self.world.servers[name].frozen = False

    def _accept(self, name: str) -> None:
        self.world.servers[name].refusing = False

    def _agent(self, name: str) -> Callable[[], None]:
        def restart() -> None:
            self.world.env.agents[name] = self.world.new_agent(name)

        return restart

    def _spawn(self, work: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

