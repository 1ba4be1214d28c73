"""Failover benchmark: kill -9 the primary's postmaster under a continuous writer, N times.

Reports, per run and as median / max: seconds from the kill to the first commit accepted by the
new primary, and acknowledged commits lost. Usage (from the repository root):

    .venv/bin/python bench/failover.py --runs 10 --threshold 2 [--hosts]

--hosts runs it on three namespace hosts (`pghad lab up --hosts`, root only): agents on the
node hosts, the daemon on its own host, every connection over the bridge.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time

from common import save_result

from pghad.cluster.memory_file import STATE_FILE
from pghad.config import load_config
from pghad.lab import lab_destroy
from pghad.state_store import read_json
from tests.support.chaos import (
    Writer,
    kill9,
    scratch_hosts_lab,
    scratch_lab,
    set_config_value,
    start_daemon,
    streaming_standbys,
    wait_for,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=2.0)
    parser.add_argument("--hosts", action="store_true", help="on three namespace hosts")
    args = parser.parse_args()

    netns = None
    if args.hosts:
        root, config_path, netns = scratch_hosts_lab(first_port=25432)
        set_config_value(config_path, "redis", "url", '"redis://127.0.0.1:1/0"')
    else:
        root, config_path = scratch_lab(first_port=25432, api_port=28088)
    lab_dir = config_path.parent
    set_config_value(config_path, "cluster", "failover_threshold", str(args.threshold))
    set_config_value(config_path, "backup", "schedule", "false")
    config = load_config(config_path)
    daemon = start_daemon(config_path, root / "daemon.log", netns)
    runs: list[dict[str, object]] = []
    state_path = config.state.dir / STATE_FILE
    try:
        for number in range(1, args.runs + 1):

            def eligible() -> bool:
                state = read_json(state_path) or {}
                primary = state.get("primary")
                return (
                    bool(state.get("standby_eligible"))
                    and isinstance(primary, str)
                    and streaming_standbys(config, primary).get(config.other(primary).name)
                    == "sync"
                )

            wait_for(eligible, timeout=60, what="an eligible synchronous standby")
            primary = str((read_json(state_path) or {})["primary"])
            standby = config.other(primary).name
            writer = Writer(config).start()
            time.sleep(1.0)
            killed_at = kill9(config.node(primary))
            killed_wall = time.time()
            wait_for(
                lambda: writer.first_commit_on(standby, killed_at) is not None,  # noqa: B023
                timeout=60,
                what="a commit on the new primary",
            )
            time.sleep(0.3)
            writer.stop()
            first = writer.first_commit_on(standby, killed_at)
            assert first is not None
            lost = len(writer.missing_on(standby))
            run = {
                "run": number,
                "killed": primary,
                "promoted": standby,
                "kill_to_first_commit_s": round(first - killed_at, 3),
                "acknowledged": len(writer.acked),
                "lost": lost,
                "killed_at": time.strftime("%H:%M:%S", time.gmtime(killed_wall))
                + f".{int(killed_wall % 1 * 1000):03d}",
            }
            runs.append(run)
            print(json.dumps(run), flush=True)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        lab_destroy(lab_dir)
    shutil.rmtree(root, ignore_errors=True)  # kept (with daemon.log) only when a run fails
    times = [float(str(r["kill_to_first_commit_s"])) for r in runs]
    lost_total = sum(int(str(r["lost"])) for r in runs)
    summary = {
        "threshold_s": args.threshold,
        "runs": len(runs),
        "median_s": round(statistics.median(times), 3),
        "max_s": max(times),
        "lost_total": lost_total,
        "per_run": runs,
    }
    summary["hosts"] = args.hosts
    save_result("failover-hosts" if args.hosts else "failover", summary)
    print(
        f"kill -> first commit on the new primary: median {summary['median_s']} s, "
        f"max {summary['max_s']} s (threshold {args.threshold} s); "
        f"acknowledged commits lost: {summary['lost_total']} in {len(runs)} runs"
    )
    return 0 if summary["lost_total"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
