"""The long search of the deterministic simulation (pghad.testing.sim).

    python bench/simulate.py --schedules 5000 --seed 1

Runs generated fault schedules against the real daemon and agents' logic, prints the schedules
run, simulated hours, wall time and violations; each violation's schedule is shrunk and printed.
`--replay SEED` runs one seed and prints its whole trace.
"""

from __future__ import annotations

import argparse
import time

from pghad.testing.sim.search import run_seed, search, shrink
from pghad.testing.sim.world import Result


def report(result: Result, started: float, shrunk: Result | None) -> None:
    first = result.violations[0]
    wall = time.monotonic() - started
    print(f"seed {result.schedule.seed} after {wall:.1f} s wall: {first}", flush=True)
    if shrunk is not None:
        print("  shrunk schedule: " + shrunk.schedule.describe().replace("\n", "\n  "))
        print(f"    -> {shrunk.violations[0]}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shrink-per-kind", type=int, default=3, help="shrink the first N of each kind (0: none)"
    )
    parser.add_argument("--replay", type=int, help="run one seed and print its trace")
    parser.add_argument("--stop-after", type=int, default=0, help="stop after N violations")
    args = parser.parse_args()
    if args.replay is not None:
        result = run_seed(args.replay)
        print(result.schedule.describe())
        print("\n".join(result.trace))
        print("violations:", *result.violations or ["none"], sep="\n  ")
        print("reported:", *result.reports or ["none"], sep="\n  ")
        return 1 if result.failed else 0
    started = time.monotonic()
    kinds: dict[str, int] = {}
    # Seeds by what they report apart: a lost cancel-acknowledged commit (`lost_cancel_ack`),
    # commits whose only copy went with a lost data directory (`lost_with_disk`).
    reported: dict[str, list[int]] = {}

    def note(result: Result) -> None:
        for kind in sorted({r.kind for r in result.reports}):
            reported.setdefault(kind, []).append(result.schedule.seed)

    summary = None
    for current, found in search(args.seed, args.schedules, note):
        summary = current
        if found is None:
            continue
        kind = found.result.violations[0].kind
        kinds[kind] = kinds.get(kind, 0) + 1
        shrunk = shrink(found.result) if kinds[kind] <= args.shrink_per_kind else None
        report(found.result, started, shrunk)
        if args.stop_after and sum(kinds.values()) >= args.stop_after:
            break
    assert summary is not None
    wall = time.monotonic() - started
    apart = ", ".join(f"{kind} {len(seeds)} {seeds[:10]}" for kind, seeds in reported.items())
    print(
        f"\nschedules run: {summary.schedules}, simulated hours: {summary.simulated_s / 3600:.2f}, "
        f"wall time: {wall:.1f} s, violations: {sum(kinds.values())} {kinds or ''}; "
        f"reported apart (schedules): {apart or 'none'}"
    )
    return 1 if kinds else 0


if __name__ == "__main__":
    raise SystemExit(main())
