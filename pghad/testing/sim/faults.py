"""Applying a schedule's faults to the world: each fault starts, and a lasting one ends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pghad.testing.sim.network import CLIENT
from pghad.testing.sim.schedule import HOSTS, Fault

if TYPE_CHECKING:
    from pghad.testing.sim.world import World

Event = tuple[float, int, str, Callable[[], None]]


class Faults:
    def __init__(self, world: World) -> None:
        self.world = world
        self.events: list[Event] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def plan(self, start: float) -> None:
        for fault in self.world.schedule.faults:
            self._add(start + fault.at, fault.label, self._starter(fault))
        self.events.sort(key=lambda e: (e[0], e[1]))

    def _starter(self, fault: Fault) -> Callable[[], None]:
        return lambda: self._begin(fault)

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
        end = self.world.clock() + fault.duration
        if fault.kind in ("isolate", "partition", "cut", "loss", "delay", "cut_one_way"):
            self._network(fault, end)
        elif fault.target in self.world.servers and fault.kind != "kill_agent":
            self._server(fault, end)
        else:
            self._process(fault, end)

    def _network(self, fault: Fault, end: float) -> None:
        if fault.kind in ("isolate", "partition"):
            links = self._isolation(fault.target, fault.kind == "isolate")
            for link in links:
                self._link(fault, link, True)
            for index, link in enumerate(links):
                heal = end + index * fault.value
                self._later(heal, f"heal {'-'.join(link)}", self._heal(fault, link))
            return
        sep = ">" if fault.kind == "cut_one_way" else "-"
        src, dst = fault.target.split(sep)
        self._link(fault, (src, dst), True)
        self._later(end, f"heal {fault.target}", self._heal(fault, (src, dst)))

    def _server(self, fault: Fault, end: float) -> None:
        name = fault.target
        server = self.world.servers[name]
        match fault.kind:
            case "freeze":
                if server.running:
                    server.frozen = True
                    self._later(end, f"thaw {name}", lambda: self._thaw(name))
            case "crash" | "lose_data":
                server.halt()
                if fault.kind == "lose_data":
                    server.has_data = False
                    self.world.checker.data_lost(name, self.world.servers, self.world.writer.acked)
                self.world.checker.health[name].down_by_fault = True
            case "stop":
                self._spawn(self._stop(name))
            case "refuse":
                server.refusing = True
                self._later(end, f"{name} accepts pghad again", lambda: self._accept(name))

    def _process(self, fault: Fault, end: float) -> None:
        world = self.world
        match fault.kind:
            case "kill_daemon" | "stale_state":
                world.daemon.kill()
                if fault.kind == "stale_state":
                    world.restore_early_state()
                self._later(end, "daemon restarted", world.daemon.start)
            case "kill_agent":
                world.env.agents[fault.target] = None
                world.checker.health[fault.target].agent_gone = True
                self._later(end, f"agent {fault.target} restarted", self._agent(fault.target))
            case _:
                world.daemon.request(fault.kind)

    async def _stop(self, name: str) -> None:
        await self.world.env.hosts.stop(name)
        self.world.checker.health[name].down_by_fault = True

    def _isolation(self, host: str, client_too: bool) -> list[tuple[str, str]]:
        others = [h for h in (*HOSTS, *([CLIENT] if client_too else [])) if h != host]
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
            self.world.checker.health[name].agent_gone = False

        return restart

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
