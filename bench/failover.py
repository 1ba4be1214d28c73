"""Failover benchmark: kill -9 the primary's postmaster under a continuous writer, N times.

Reports, per run and as median / max: seconds from the kill to the first commit accepted by the
new primary, and acknowledged commits lost. Usage (from the repository root):

    .venv/bin/python bench/failover.py --runs 10 --threshold 2 [--hosts [--cut]]

--hosts runs it on three namespace hosts (`pghad lab up --hosts`, root only): agents on the
node hosts, the daemon on its own host, every connection over the bridge. --cut takes the
primary's host off the network instead of killing its server (host loss), reports when its agent
fenced it (it must be before the new primary's first commit), then heals the link and waits for
the old primary to rejoin before the next run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import save_result

from pghad.config.model import Config, load_config
from pghad.daemon.memory_file import STATE_FILE
from pghad.lab.local import lab_destroy
from pghad.system.state_store import read_json
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
    parser.add_argument("--cut", action="store_true", help="cut the primary's host (--hosts)")
    args = parser.parse_args()
    if args.cut and not args.hosts:
        parser.error("--cut needs --hosts: only namespace hosts have a link to cut")

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
            run = _one_run(number, config, state_path, lab_dir, cut=args.cut)
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
    if args.cut:
        summary["cut"] = True
        summary["all_fenced_first"] = all(r.get("fenced_before_first_commit") for r in runs)
    name = "failover-hosts-cut" if args.cut else "failover-hosts" if args.hosts else "failover"
    save_result(name, summary)
    print(
        f"kill -> first commit on the new primary: median {summary['median_s']} s, "
        f"max {summary['max_s']} s (threshold {args.threshold} s); "
        f"acknowledged commits lost: {summary['lost_total']} in {len(runs)} runs"
    )
    ok = summary["lost_total"] == 0 and summary.get("all_fenced_first", True)
    return 0 if ok else 1


def _one_run(
    number: int, config: Config, state_path: Path, lab_dir: Path, cut: bool
) -> dict[str, object]:
    def eligible() -> bool:
        state = read_json(state_path) or {}
        primary = state.get("primary")
        return (
            bool(state.get("standby_eligible"))
            and isinstance(primary, str)
            and streaming_standbys(config, primary).get(config.other(primary).name) == "sync"
        )

    wait_for(eligible, timeout=60, what="an eligible synchronous standby")
    primary = str((read_json(state_path) or {})["primary"])
    standby = config.other(primary).name
    writer = Writer(config).start()
    time.sleep(1.0)
    killed_wall = time.time()
    if cut:
        killed_at = time.monotonic()
        _link(lab_dir, primary, up=False)
    else:
        killed_at = kill9(config.node(primary))
    wait_for(
        lambda: writer.first_commit_on(standby, killed_at) is not None,
        timeout=60,
        what="a commit on the new primary",
    )
    time.sleep(0.3)
    writer.stop()
    first = writer.first_commit_on(standby, killed_at)
    assert first is not None
    lost = len(writer.missing_on(standby))
    fence: dict[str, object] = {}
    if cut:
        fenced = _fenced_after(lab_dir, primary, killed_wall)
        first_wall = killed_wall + (first - killed_at)
        fence = {
            "cut_to_self_fence_s": round(fenced - killed_wall, 3) if fenced else None,
            "fenced_before_first_commit": fenced is not None and fenced < first_wall,
        }
        _link(lab_dir, primary, up=True)
        wait_for(
            lambda: streaming_standbys(config, standby).get(primary) is not None,
            timeout=90,
            what="the old primary rejoined",
        )
    return {
        "run": number,
        "killed": primary,
        "promoted": standby,
        "kill_to_first_commit_s": round(first - killed_at, 3),
        "acknowledged": len(writer.acked),
        "lost": lost,
        **fence,
        "killed_at": time.strftime("%H:%M:%S", time.gmtime(killed_wall))
        + f".{int(killed_wall % 1 * 1000):03d}",
    }


def _network(lab_dir: Path) -> dict[str, Any]:
    return dict(json.loads((lab_dir / "lab.json").read_text())["network"])


def _link(lab_dir: Path, host: str, up: bool) -> None:
    interface = _network(lab_dir)["hosts"][host]["interface"]
    subprocess.run(["ip", "link", "set", interface, "up" if up else "down"], check=True)


def _fenced_after(lab_dir: Path, node: str, since_wall: float) -> float | None:
    """Wall time of the node's agent's first self_fenced event after `since_wall`."""
    for line in (lab_dir / f"agent-{node}.log").read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") != "self_fenced":
            continue
        at = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        if at >= since_wall:
            return at
    return None


if __name__ == "__main__":
    raise SystemExit(main())
