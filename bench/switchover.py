"""Switchover and failback benchmark on the lab, with a writer committing continuously.

Reports, over N runs each (median and max):
- planned switchover (POST /switchover): the longest gap between acknowledged commits;
- failback after a kill -9 failover (POST /failback): the call's total time;
and acknowledged commits lost (must be 0). Usage, from the repository root:

    .venv/bin/python bench/switchover.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from typing import Any

from common import save_result

from pghad.api.client import ApiCallFailed, ApiClient
from pghad.config.model import Config, load_config
from pghad.lab.local import lab_destroy
from tests.support.chaos import Writer, kill9, scratch_lab, start_daemon, wait_for


def call(config: Config, method: str, path: str) -> dict[str, Any]:
    api = config.api
    return ApiClient(f"http://{api.bind}:{api.port}", api.token, timeout=120).call(method, path)


def wait_eligible(config: Config) -> str:
    def eligible() -> bool:
        try:
            status = call(config, "GET", "/status")
        except ApiCallFailed:
            return False
        return bool(status["standby_eligible"])

    wait_for(eligible, timeout=60, what="an eligible synchronous standby")
    return str(call(config, "GET", "/status")["primary"])


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def switchovers(config: Config, writer: Writer, runs: int) -> list[float]:
    gaps = []
    for number in range(1, runs + 1):
        wait_eligible(config)
        time.sleep(0.5)
        started = time.monotonic()
        body = call(config, "POST", "/switchover")
        ended = time.monotonic()
        time.sleep(0.5)
        gap = writer.longest_gap(started - 0.2, time.monotonic())
        gaps.append(gap)
        line = {
            "switchover": number,
            "write_gap_s": round(gap, 3),
            "call_s": round(ended - started, 3),
            "to": body["new_primary"],
        }
        print(json.dumps(line), flush=True)
    return gaps


def failbacks_after_kill(config: Config, writer: Writer, runs: int) -> list[float]:
    times = []
    for number in range(1, runs + 1):
        primary = wait_eligible(config)
        if primary != config.preferred_primary:
            call(config, "POST", "/failback")
            primary = wait_eligible(config)
        other = config.other(primary).name
        killed_at = kill9(config.node(primary))
        wait_for(
            lambda: writer.first_commit_on(other, killed_at) is not None,  # noqa: B023
            timeout=60,
            what="the automatic failover",
        )
        started = time.monotonic()
        body = call(config, "POST", "/failback")
        took = time.monotonic() - started
        times.append(took)
        line = {"failback": number, "total_s": round(took, 3), "to": body["new_primary"]}
        print(json.dumps(line), flush=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    root, config_path = scratch_lab(first_port=26432, api_port=28089)
    lab_dir = config_path.parent
    config = load_config(config_path)
    daemon = start_daemon(config_path, root / "daemon.log")
    writer: Writer | None = None
    try:
        wait_eligible(config)
        writer = Writer(config).start()
        gaps = switchovers(config, writer, args.runs)
        failbacks = failbacks_after_kill(config, writer, args.runs)
        time.sleep(0.3)
        writer.stop()
        primary = wait_eligible(config)
        lost = len(writer.missing_on(primary))
        acknowledged = len(writer.acked)
    finally:
        if writer is not None:
            writer.stop()
        daemon.terminate()
        daemon.wait(timeout=30)
        lab_destroy(lab_dir)
    shutil.rmtree(root, ignore_errors=True)  # kept (with daemon.log) only when a run fails
    result = {
        "runs": args.runs,
        "switchover_write_gap_s": summary(gaps),
        "failback_after_kill9_total_s": summary(failbacks),
        "acknowledged": acknowledged,
        "lost": lost,
    }
    save_result("switchover", result)
    print(json.dumps(result))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
