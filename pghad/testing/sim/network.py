"""The simulated network: directed links between endpoints, each cut, lossy or slow.

Endpoints are the daemon's host, each database host (its server and its agent), and the client.
Faults overlap: a link is cut while any cut covers it; its loss and delay are the largest active.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DAEMON = "daemon"
CLIENT = "client"


@dataclass
class Link:
    cuts: int = 0
    losses: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return max(self.losses, default=0.0)

    @property
    def delay(self) -> float:
        return max(self.delays, default=0.0)


HEALTHY = Link()


class Network:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.links: dict[tuple[str, str], Link] = {}

    def link(self, src: str, dst: str) -> Link:
        return self.links.setdefault((src, dst), Link())

    def _seen(self, src: str, dst: str) -> Link:
        """The link as it is now, without creating it (an untouched link is a healthy one)."""
        return self.links.get((src, dst)) or HEALTHY

    def cut(self, src: str, dst: str, on: bool) -> None:
        self.link(src, dst).cuts += 1 if on else -1

    def lossy(self, src: str, dst: str, loss: float, on: bool) -> None:
        losses = self.link(src, dst).losses
        losses.append(loss) if on else losses.remove(loss)

    def slow(self, src: str, dst: str, delay: float, on: bool) -> None:
        delays = self.link(src, dst).delays
        delays.append(delay) if on else delays.remove(delay)

    def up(self, src: str, dst: str) -> bool:
        """Not cut in either direction (loss aside): what the invariants count as reachable."""
        return src == dst or (self._seen(src, dst).cuts == 0 and self._seen(dst, src).cuts == 0)

    def usable(self, src: str, dst: str, within: float = 1.0, lossless: bool = False) -> bool:
        """Up, with answers faster than `within` (a slower link is as good as cut to a timeout)."""
        if not self.up(src, dst) or src == dst:
            return src == dst
        there, back = self._seen(src, dst), self._seen(dst, src)
        if lossless and (there.loss or back.loss):
            return False
        return there.delay + back.delay < within

    def exchanges(self, src: str, dst: str, at_least: float) -> bool:
        """Usable, and at least that fraction of requests get their answer through."""
        there, back = self._seen(src, dst), self._seen(dst, src)
        return self.usable(src, dst) and (1 - there.loss) * (1 - back.loss) >= at_least

    def round_trip(self, src: str, dst: str) -> float | None:
        """Seconds a request and its answer take, or None when either is lost."""
        if src == dst:
            return 0.0
        there, back = self._seen(src, dst), self._seen(dst, src)
        if there.cuts or back.cuts:
            return None
        if self._lost(there) or self._lost(back):
            return None
        return there.delay + back.delay

    def _lost(self, link: Link) -> bool:
        return link.loss > 0 and self.rng.random() < link.loss

    def quiet(self) -> bool:
        return all(not (k.cuts or k.losses or k.delays) for k in self.links.values())
