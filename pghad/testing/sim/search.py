"""Run many schedules, and shrink a failing one to the fewest faults that still fail the same way.

Shrinking is delta debugging over the schedule's fault list (Zeller's ddmin): drop chunks of
faults, keep any smaller list whose run breaks the same invariant, refine the chunks until no
single fault can go.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pghad.testing.sim.schedule import Schedule, generate
from pghad.testing.sim.world import Result, run_schedule

SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # state.json is fsynced


def run(schedule: Schedule) -> Result:
    with tempfile.TemporaryDirectory(prefix="pghad-sim-", dir=SCRATCH) as state_dir:
        return run_schedule(schedule, Path(state_dir))


def run_seed(seed: int) -> Result:
    return run(generate(seed))


def first_kind(result: Result) -> str | None:
    return result.violations[0].kind if result.violations else None


def shrink(result: Result, budget: int = 200) -> Result:
    """The smallest failing schedule found, failing with the same first violation."""
    kind = first_kind(result)
    assert kind is not None, "only a failing run shrinks"
    best = result
    faults = list(result.schedule.faults)
    chunks = 2
    tries = 0
    while len(faults) >= 2 and tries < budget:
        size = max(1, len(faults) // chunks)
        pieces = [faults[i : i + size] for i in range(0, len(faults), size)]
        reduced = False
        for index in range(len(pieces)):
            rest = [f for j, piece in enumerate(pieces) if j != index for f in piece]
            tries += 1
            attempt = run(result.schedule.with_faults(tuple(rest)))
            if first_kind(attempt) == kind:
                best, faults, reduced = attempt, rest, True
                chunks = max(chunks - 1, 2)
                break
        if not reduced:
            if chunks >= len(faults):
                break
            chunks = min(len(faults), chunks * 2)
    return best


@dataclass
class Found:
    seed: int
    result: Result


@dataclass
class Summary:
    schedules: int = 0
    simulated_s: float = 0.0
    found: list[Found] = field(default_factory=list)


def search(
    first_seed: int,
    count: int,
    on_result: Callable[[Result], None] = lambda result: None,
) -> Iterator[tuple[Summary, Found | None]]:
    """Run `count` generated schedules from `first_seed` on; yields after each run."""
    summary = Summary()
    for seed in range(first_seed, first_seed + count):
        result = run_seed(seed)
        summary.schedules += 1
        summary.simulated_s += result.simulated_s
        on_result(result)
        found = Found(seed, result) if result.failed else None
        if found is not None:
            summary.found.append(found)
        yield summary, found
