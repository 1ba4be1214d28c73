"""The daemon's resident memory and CPU use on the lab at a 1 s probe interval.

Usage, from the repository root (5 minutes by default):

    .venv/bin/python bench/resources.py --seconds 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from common import save_result

from pghad.lab.local import lab_destroy
from tests.support.chaos import scratch_lab, start_daemon

TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=300)
    args = parser.parse_args()

    root, config_path = scratch_lab(first_port=27432, api_port=28090)
    lab_dir = config_path.parent
    daemon = start_daemon(config_path, root / "daemon.log")
    try:
        time.sleep(5)  # imports and the first rounds are not the steady state
        start_cpu, start = cpu_seconds(daemon.pid), time.monotonic()
        peak = 0.0
        while time.monotonic() - start < args.seconds:
            peak = max(peak, rss_mb(daemon.pid))
            time.sleep(1)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(daemon.pid) - start_cpu
        final_rss = rss_mb(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        lab_destroy(lab_dir)
    shutil.rmtree(root, ignore_errors=True)  # kept (with daemon.log) only when a run fails
    result = {
        "seconds": round(elapsed),
        "probe_interval_s": 1.0,
        "rss_mb_peak": round(peak, 1),
        "rss_mb_end": round(final_rss, 1),
        "cpu_percent_of_one_core": round(100 * cpu / elapsed, 2),
    }
    save_result("resources", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
