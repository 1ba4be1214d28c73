"""Compose benchmark: the docker-compose.yml stack on a real engine, with a continuous writer.

From nothing to healthy; then N cycles of `docker kill postgres_master` (seconds from the kill
until postgres_slave takes a write, and until the writer's first commit there; commits lost;
the old primary rejoining by itself; POST /failback); then N switchovers (pghad's own write
pause, and the longest gap between the writer's acknowledged commits). Threshold 2 s.
Usage (from the repository root, as root):

    .venv/bin/python bench/compose.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from common import save_result

from pghad.config.model import Config
from tests.support.chaos import Writer, connect, wait_for
from tests.support.compose_stack import (
    Stack,
    down,
    healthy_pair,
    prepare_engine,
    project_copy,
    run,
    up,
)


def first_write(config: Config, node: str, deadline_s: float = 60) -> float:
    """When `node` first takes a write, trying every 20 ms on fresh connections: the moment the
    new primary accepts writes, whatever a given client's reconnection costs."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with connect(config, node, timeout=1) as conn:
                conn.execute("INSERT INTO pghad_failover_probe VALUES (now())")
                return time.monotonic()
        except psycopg.Error:
            time.sleep(0.02)
    raise AssertionError(f"{node} took no write within {deadline_s} s")


def kill_cycle(stack: Stack, number: int) -> dict[str, object]:
    stack.wait_status(healthy_pair("postgres_master"), 120, "an eligible synchronous standby")
    config = stack.config()
    with connect(config, "postgres_master") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pghad_failover_probe (at timestamptz)")
    writer = Writer(config).start()
    time.sleep(1.0)
    killed = time.monotonic()
    run("docker", "kill", "postgres_master")
    writable = first_write(config, "postgres_slave")
    wait_for(
        lambda: writer.first_commit_on("postgres_slave", killed) is not None,
        timeout=60,
        what="a commit on postgres_slave",
    )
    first = writer.first_commit_on("postgres_slave", killed) or killed
    stack.wait_status(healthy_pair("postgres_slave"), 120, "postgres_master rejoined")
    rejoined = time.monotonic()
    started = time.monotonic()
    code, body = stack.api("POST", "/failback")
    failback_s = time.monotonic() - started
    assert code == 200, body
    stack.wait_status(healthy_pair("postgres_master"), 60, "failed back")
    time.sleep(0.5)
    writer.stop()
    result: dict[str, object] = {
        "run": number,
        "kill_to_writable_s": round(writable - killed, 3),
        "kill_to_first_commit_s": round(first - killed, 3),
        "kill_to_rejoined_s": round(rejoined - killed, 3),
        "failback_s": round(failback_s, 3),
        "acknowledged": len(writer.acked),
        "lost": len(writer.missing_on("postgres_master")),
    }
    print(json.dumps(result), flush=True)
    return result


def switchover(stack: Stack, number: int) -> dict[str, object]:
    primary = "postgres_master" if number % 2 else "postgres_slave"
    stack.wait_status(healthy_pair(primary), 120, "an eligible synchronous standby")
    writer = Writer(stack.config()).start()
    time.sleep(1.0)
    started = time.monotonic()
    code, body = stack.api("POST", "/switchover")
    ended = time.monotonic()
    assert code == 200, body
    time.sleep(1.0)
    writer.stop()
    new = body["new_primary"]
    result: dict[str, object] = {
        "switchover": number,
        "to": new,
        "write_gap_s": round(writer.longest_gap(started - 0.5, ended + 1.0), 3),
        "pghad_write_pause_s": body["write_pause_s"],
        "call_s": round(ended - started, 3),
        "acknowledged": len(writer.acked),
        "lost": len(writer.missing_on(new)),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    prepare_engine()
    root = Path(tempfile.mkdtemp(prefix="pghad-bench-compose-"))
    stack = project_copy(root)
    try:
        up(stack)
        print(json.dumps({"up_to_healthy_s": round(stack.up_seconds, 1)}), flush=True)
        kills = [kill_cycle(stack, n) for n in range(1, args.runs + 1)]
        switches = [switchover(stack, n) for n in range(1, args.runs + 1)]
        if switches[-1]["to"] != "postgres_master":
            stack.api("POST", "/failback")
    finally:
        down(stack, root / "compose.log")
    shutil.rmtree(root, ignore_errors=True)

    def median(rows: list[dict[str, object]], key: str) -> float:
        return round(statistics.median(float(str(r[key])) for r in rows), 3)

    lost = sum(int(str(r["lost"])) for r in kills + switches)
    summary = {
        "threshold_s": 2.0,
        "runs": args.runs,
        "up_to_healthy_s": round(stack.up_seconds, 1),
        "kill_to_writable_s": {
            "median": median(kills, "kill_to_writable_s"),
            "max": max(float(str(r["kill_to_writable_s"])) for r in kills),
        },
        "kill_to_first_commit_s": {
            "median": median(kills, "kill_to_first_commit_s"),
            "max": max(float(str(r["kill_to_first_commit_s"])) for r in kills),
        },
        "failback_s": {"median": median(kills, "failback_s")},
        "switchover_pghad_write_pause_s": {"median": median(switches, "pghad_write_pause_s")},
        "switchover_write_gap_s": {
            "median": median(switches, "write_gap_s"),
            "max": max(float(str(r["write_gap_s"])) for r in switches),
        },
        "lost_total": lost,
        "per_kill": kills,
        "per_switchover": switches,
    }
    save_result("compose", summary)
    print(json.dumps({k: v for k, v in summary.items() if not k.startswith("per_")}))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
