"""Shared fixtures: real two-server PostgreSQL 18 labs, a real Redis, a daemon in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pghad.config.model import Config, load_config
from pghad.lab.local import free_port, lab_destroy, lab_up
from pghad.lab.s3 import S3Server
from pghad.system import procs
from tests.support.chaos import log_events, set_config_value

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    procs.become_subreaper()


@pytest.fixture(scope="session")
def work_root() -> Iterator[Path]:
    """A directory the unprivileged PostgreSQL user can traverse (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="pghad-test-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    if os.environ.get("PGHAD_KEEP_TEST_DIR") is None:
        shutil.rmtree(root, ignore_errors=True)


_port_cursor = [20000 + (os.getpid() % 200) * 50]


def _next_port() -> int:
    port = free_port(_port_cursor[0])
    _port_cursor[0] = port + 5
    return port


class RedisServer:
    """A private redis-server on its own port (never the machine's shared one)."""

    def __init__(self, port: int, data: Path) -> None:
        self.port = port
        self.data = data
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: run `make test` (it installs it) or "
                "`apt-get install -y redis-server`"
            )
        self.data.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.data)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(work_root: Path) -> Iterator[RedisServer]:
    server = RedisServer(_next_port(), work_root / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(work_root: Path) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS `weed mini`) on loopback with its own credentials."""
    server = S3Server.create(work_root / "s3", _next_port()).start()
    _port_cursor[0] = max(server.ports.values()) + 1
    yield server
    server.stop()


@pytest.fixture
def private_redis(work_root: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which the test may stop and start."""
    server = RedisServer(_next_port(), work_root / f"redis-{time.monotonic_ns()}").start()
    yield server
    server.stop()


@dataclass
class Lab:
    dir: Path
    config_path: Path

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def set(self, section: str, key: str, value: str) -> None:
        """Rewrite one `key = value` line inside [section] of the lab's config.toml."""
        set_config_value(self.config_path, section, key, value)


def make_lab(root: Path, name: str) -> Lab:
    lab_dir = root / name
    lab_up(lab_dir, first_port=_next_port(), api_port=_next_port())
    lab = Lab(lab_dir, lab_dir / "config.toml")
    lab.set("cluster", "failover_threshold", "2.0")
    lab.set("backup", "schedule", "false")  # tests take backups when they mean to
    return lab


@pytest.fixture
def lab(
    work_root: Path, request: pytest.FixtureRequest, redis_server: RedisServer
) -> Iterator[Lab]:
    """A fresh primary + streaming standby, destroyed after the test (Redis: the test server)."""
    made = make_lab(work_root, request.node.name[:40])
    made.set("redis", "url", f'"{redis_server.url}"')
    yield made
    lab_destroy(made.dir)
    procs.reap_postgres_zombies()


class DaemonProcess:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        # Beside the lab, not in it: the log outlives `lab destroy` for post-mortems.
        self.log_path = lab.dir.parent / f"{lab.dir.name}-daemon-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._api = ""
        self._token = ""

    def start(
        self, extra_env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> DaemonProcess:
        config = self.lab.config
        self._api = f"http://{config.api.bind}:{config.api.port}"  # as the daemon bound it
        self._token = config.api.token
        env = {**os.environ, **(extra_env or {})}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(prefix or []),
                    sys.executable,
                    "-m",
                    "pghad",
                    "run",
                    "--config",
                    str(self.lab.config_path),
                ],
                stdout=log,
                stderr=log,
                env=env,
                cwd=REPO,
            )
        return self

    def events(self) -> list[dict[str, Any]]:
        return log_events(self.log_path)

    def named(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == kind]

    def decisions(self, code: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == "decision" and e.get("code") == code]

    def wait_event(self, predicate: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if predicate(event):
                    return event
            time.sleep(0.1)
        raise AssertionError(
            f"no {what} event within {timeout} s; log:\n{self.log_path.read_text()[-4000:]}"
        )

    @property
    def api(self) -> str:
        return self._api

    def http(self, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
        """Call the daemon's API; returns (status code, decoded JSON or text)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        response = httpx.request(method, self.api + path, headers=headers, timeout=120)
        try:
            return response.status_code, response.json()
        except json.JSONDecodeError:
            return response.status_code, response.text

    def post(self, path: str) -> tuple[int, Any]:
        return self.http("POST", path, token=self._token)

    def wait_healthy(self, timeout: float = 20) -> None:
        self.wait_event(lambda e: e.get("code") == "healthy", timeout, "healthy decision")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def daemon(lab: Lab) -> Iterator[DaemonProcess]:
    """The daemon for `lab`, not yet started; stopped after the test."""
    proc = DaemonProcess(lab)
    yield proc
    proc.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran the daemon shows the end of the daemon's log."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    daemon = getattr(item, "funcargs", {}).get("daemon")
    if report.failed and isinstance(daemon, DaemonProcess) and daemon.log_path.exists():
        tail = daemon.log_path.read_text(errors="replace")[-12000:]
        report.sections.append(("daemon log, last 12,000 characters", tail))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def _reap_forever() -> None:
    while True:
        procs.reap_postgres_zombies()
        time.sleep(0.2)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Postmasters orphaned by pg_ctl are adopted by this process: reap them when killed."""
    import threading

    threading.Thread(target=_reap_forever, name="reaper", daemon=True).start()
