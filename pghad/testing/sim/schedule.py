"""A fault schedule: the world's settings and a list of timed faults, generated from a seed.

Faults land close to each other (around a few focus times) so that compound faults, the ones no
single-fault test finds, come up often.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

NODES = ("a", "b")
HOSTS = ("daemon", "a", "b")

# kind -> what its target is: a node, a host, a link "x-y", a one-way link "x>y", or nothing
KINDS = {
    "isolate": "host",  # every link of a host cut; value: seconds between staged heals
    "partition": "host",  # the host cut from the other two hosts; the client still reaches it
    "cut": "link",
    "cut_one_way": "one_way",
    "loss": "link",  # value: the fraction of packets lost
    "delay": "link",  # value: seconds each way
    "freeze": "node",  # SIGSTOP
    "crash": "node",  # kill -9 of the server
    "stop": "node",  # a clean stop by someone else (maintenance)
    "lose_data": "node",  # the data directory is gone (the server crashes)
    "refuse": "node",  # refuses pghad's connections (pg_hba, slots, a password)
    "kill_daemon": "none",  # restarted after `duration`
    "stale_state": "none",  # kill_daemon, and state.json comes back as it was at the start
    "kill_agent": "node",  # the agent on that host, restarted after `duration`
    "switchover": "none",
    "failover": "none",
    "failback": "none",
}
WEIGHTS = {"switchover": 2.0, "kill_daemon": 2.5, "isolate": 1.5, "partition": 1.5, "freeze": 1.5}
LASTING = ("isolate", "partition", "cut", "cut_one_way", "loss", "delay", "freeze", "refuse",
           "kill_daemon", "stale_state", "kill_agent")  # fmt: skip


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    target: str = ""
    duration: float = 0.0
    value: float = 0.0

    def __str__(self) -> str:
        return f"t={self.at:6.1f}s {self.label}"

    @property
    def label(self) -> str:
        text = self.kind
        text += f" {self.target}" if self.target else ""
        text += f" for {self.duration:.1f}s" if self.kind in LASTING else ""
        text += f" ({self.value:g})" if self.value else ""
        return text


@dataclass(frozen=True)
class Schedule:
    seed: int
    agents: bool = True
    write_interval: float = 0.5  # a busy client; an idle one commits rarely
    cancel_after: float | None = None  # the client cancels synchronous waits after this long
    clone_s: float = 5.0
    promote_s: float = 0.5
    threshold: float = 10.0
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    @property
    def heal_at(self) -> float:
        """When the last fault is over (a staged heal counted in full)."""
        ends = [f.at + f.duration + 3 * f.value * (f.kind == "isolate") for f in self.faults]
        return max(ends, default=0.0)

    def with_faults(self, faults: tuple[Fault, ...]) -> Schedule:
        return replace(self, faults=faults)

    def describe(self) -> str:
        head = (
            f"seed {self.seed}: {'agents' if self.agents else 'no agents'}, "
            f"threshold {self.threshold:g}s, a commit every {self.write_interval:g}s"
            + (f", waits cancelled after {self.cancel_after:g}s" if self.cancel_after else "")
            + (f", copy {self.clone_s:g}s" if self.clone_s != 5.0 else "")
            + (f", promote {self.promote_s:g}s" if self.promote_s != 0.5 else "")
        )
        return "\n".join([head, *(f"  {fault}" for fault in self.faults)])


def generate(seed: int) -> Schedule:
    rng = random.Random(seed)
    agents = rng.random() < 0.7
    threshold = rng.choice((4.0, 10.0))
    foci = [rng.uniform(5.0, 60.0) for _ in range(rng.randint(1, 2))]
    faults: list[Fault] = []
    for _ in range(rng.randint(1, 6)):
        # Half follow the fault before within two rounds, often on the same node (a crash in
        # the middle of an operation, an agent restarted while its host is cut off); the others
        # spread around a focus.
        near = faults[-1] if faults and rng.random() < 0.5 else None
        if near is not None:
            at = near.at + rng.uniform(0.0, 2.0)
        else:
            at = rng.choice(foci) + rng.uniform(0.0, 2 * threshold)
        faults.append(_fault(rng, at, threshold, agents, near))
    return Schedule(
        seed=seed,
        agents=agents,
        write_interval=rng.choice((0.5, 0.5, 45.0)),
        cancel_after=rng.choice((None, None, 2.0)),
        clone_s=rng.choice((5.0, 5.0, 40.0)),
        promote_s=rng.choice((0.5, 0.5, 3.0, 40.0)),
        threshold=threshold,
        faults=tuple(sorted(faults, key=lambda f: f.at)),
    )


def _fault(
    rng: random.Random, at: float, threshold: float, agents: bool, near: Fault | None
) -> Fault:
    kinds = [k for k in KINDS if agents or k != "kill_agent"]
    kind = rng.choices(kinds, [WEIGHTS.get(k, 1.0) for k in kinds])[0]
    shape = KINDS[kind]
    same = near is not None and rng.random() < 0.5
    if same and near is not None and shape in ("host", "node") and near.target in NODES:
        target = near.target
    elif shape == "host":
        target = rng.choice(HOSTS)
    elif shape == "link":
        target = "-".join(rng.sample(HOSTS, 2))
    elif shape == "one_way":
        target = ">".join(rng.sample(HOSTS, 2))
    elif shape == "node":
        target = rng.choice(NODES)
    else:
        target = ""
    duration = (
        round(threshold * rng.choice((0.3, 0.85, 1.2, 2.5, 6.0)), 1) if kind in LASTING else 0
    )
    value = 0.0
    if kind == "loss":
        value = rng.choice((0.3, 0.7))
    elif kind == "delay":
        value = rng.choice((0.3, 1.5))
    elif kind == "isolate":
        value = rng.choice((0.0, 0.0, 1.0))
    return Fault(round(at, 1), kind, target, duration, value)
