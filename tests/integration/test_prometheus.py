"""The shipped alert rules and dashboard, checked by promtool and by a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pghad.lab.local import free_port
from pghad.nodes.local import LocalDriver
from pghad.record.metrics import Metrics
from pghad.system import pgbin

from ..conftest import REPO, DaemonProcess, Lab

RULES = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "pghad-dashboard.json"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (Debian package prometheus)")
    return path


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = _tool("promtool")
    subprocess.run([promtool, "check", "rules", str(RULES / "pghad-rules.yml")], check=True)
    result = subprocess.run(
        [promtool, "test", "rules", "pghad-rules.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_use_only_metrics_pghad_exports() -> None:
    exported = {m.name for m in Metrics().registry.collect()}
    exported |= {f"{name}_total" for name in exported} | {f"{name}_bucket" for name in exported}
    text = (RULES / "pghad-rules.yml").read_text()
    dashboard = json.loads(DASHBOARD.read_text())
    text += " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = set(re.findall(r"pghad_[a-z_]+", text))
    assert used and used <= exported, used - exported


@pytest.fixture
def prometheus(tmp_path: Path, lab: Lab) -> Iterator[str]:
    binary = _tool("prometheus")
    rules = (RULES / "pghad-rules.yml").read_text()
    # The production rule waits 30 s; the test keeps the expression and waits 2 s.
    rules = rules.replace(
        "expr: pghad_standby_streaming == 0\n        for: 30s",
        "expr: pghad_standby_streaming == 0\n        for: 2s",
    )
    (tmp_path / "rules.yml").write_text(rules)
    api = lab.config.api
    target = f"{api.bind}:{api.port}"
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        f"scrape_configs:\n  - job_name: pghad\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port(31500)
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _firing(prometheus: str) -> set[str]:
    try:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
    except httpx.TransportError:
        return set()
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def test_a_real_prometheus_fires_standby_not_streaming(
    lab: Lab, daemon: DaemonProcess, prometheus: str
) -> None:
    lab.set("cluster", "auto_rejoin", "false")
    daemon.start().wait_healthy()
    time.sleep(3)
    assert "PghadStandbyNotStreaming" not in _firing(prometheus)
    config = lab.config
    node2 = LocalDriver(config.local_node("node2"), config.auth, pgbin.find_bin_dir(config.pg_bin))
    asyncio.run(node2.stop())
    deadline = time.monotonic() + 30
    while "PghadStandbyNotStreaming" not in _firing(prometheus):
        assert time.monotonic() < deadline, "Prometheus did not fire PghadStandbyNotStreaming"
        time.sleep(0.5)
