"""The compose stack for tests and benchmarks: a scratch copy of the deployment, and its API.

The stack runs from a copy of the repository's compose files in a scratch directory (its own
.env, ./backups, and a 2 s failover threshold), so a run never touches a user's deployment.
Engine and images come from scripts/stand-in-images.sh when missing (no registry is reachable
here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pghad.config.model import Config, parse_config
from tests.support.chaos import set_config_value

REPO = Path(__file__).resolve().parents[2]
NODES = ("postgres_master", "postgres_slave")
API_PORT = 18088
UP_TIMEOUT_S = 180


def run(*argv: str, cwd: Path | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {result.stderr[-2000:]}")
    return result.stdout


@dataclass
class Stack:
    dir: Path
    env: dict[str, str]
    up_seconds: float = 0.0

    def compose(self, *args: str, timeout: float = 300) -> str:
        return run("docker", "compose", *args, cwd=self.dir, timeout=timeout)

    def ip(self, container: str) -> str:
        networks = json.loads(
            run("docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container)
        )
        return str(next(iter(networks.values()))["IPAddress"])

    def config(self) -> Config:
        """A config for this host's view of the stack: the containers by their addresses."""
        nodes = "".join(
            f'[[nodes]]\nname = "{name}"\nhost = "{self.ip(name)}"\ndata_dir = "/unused/{name}"\n'
            for name in NODES
        )
        text = f'[auth]\npassword = "{self.env["PGHAD_PG_PASSWORD"]}"\n' + nodes
        return parse_config(text)

    def api(self, method: str, path: str, timeout: float = 120) -> tuple[int, Any]:
        response = httpx.request(
            method,
            f"http://127.0.0.1:{API_PORT}{path}",
            headers={"Authorization": f"Bearer {self.env['PGHAD_API_TOKEN']}"},
            timeout=timeout,
        )
        return response.status_code, response.json()

    def events(self) -> list[dict[str, Any]]:
        _code, body = self.api("GET", "/events?limit=1000")
        return list(body["events"])

    def wait_status(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                _code, status = self.api("GET", "/status", timeout=5)
                if predicate(status):
                    return status
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}: {status}")


def healthy_pair(primary: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        roles = {n["name"]: n["role"] for n in status["nodes"]}
        standby = next(n for n in NODES if n != primary)
        return bool(
            status["primary"] == primary
            and status["state"] == "healthy"
            and roles == {primary: "primary", standby: "standby"}
        )

    return check


def prepare_engine() -> None:
    script = REPO / "scripts" / "stand-in-images.sh"
    env = {**os.environ, "PGHAD_SRC": str(REPO)}
    result = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"preparing the Docker engine and images failed:\n{result.stdout[-3000:]}"
        )


def project_copy(root: Path) -> Stack:
    project = root / "pghad-compose"
    project.mkdir()
    for name in (
        "docker-compose.yml",
        "Dockerfile",
        ".dockerignore",
        "pyproject.toml",
        "README.md",
    ):
        shutil.copy2(REPO / name, project / name)
    shutil.copytree(REPO / "config", project / "config")
    shutil.copytree(REPO / "pghad", project / "pghad", ignore=shutil.ignore_patterns("__pycache__"))
    set_config_value(project / "config" / "pghad.toml", "cluster", "failover_threshold", "2.0")
    set_config_value(project / "config" / "pghad.toml", "backup", "schedule", "false")
    env = {
        "PGHAD_PG_PASSWORD": "compose-superuser-secret",
        "PGHAD_REPLICATION_PASSWORD": "compose-replication-secret",
        "PGHAD_API_TOKEN": "compose-api-token",
        "PGHAD_API_PORT": str(API_PORT),
    }
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return Stack(project, env)


def up(stack: Stack) -> None:
    """From nothing (volumes removed first) to a healthy pair, timed in stack.up_seconds."""
    run("docker", "compose", "down", "-v", "--remove-orphans", cwd=stack.dir, timeout=120)
    started = time.monotonic()
    stack.compose("up", "-d", "--build", "--wait", "--wait-timeout", str(UP_TIMEOUT_S))
    stack.up_seconds = time.monotonic() - started
    stack.wait_status(healthy_pair("postgres_master"), 60, "a healthy pair")


def down(stack: Stack, log: Path | None = None) -> None:
    if log is not None:
        logs = subprocess.run(
            ["docker", "compose", "logs", "--no-color", "--tail", "400"],
            cwd=stack.dir,
            capture_output=True,
            text=True,
            check=False,
        )
        log.write_text(logs.stdout + logs.stderr)
    subprocess.run(
        ["docker", "compose", "down", "-v", "--remove-orphans"],
        cwd=stack.dir,
        capture_output=True,
        timeout=180,
        check=False,
    )
