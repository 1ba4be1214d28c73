"""Clients that hold connections or send huge bodies, against both HTTP servers (the daemon's
API and an agent), on the real lab: health checks and the heartbeat keep their answers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.chaos import wait_for

from ..conftest import REPO, DaemonProcess, Lab, _next_port

HELD = 200


def _status(url: str, timeout: float = 1.0) -> int:
    return httpx.get(url, timeout=timeout).status_code


@contextlib.contextmanager
def held_connections(port: int) -> Iterator[list[socket.socket]]:
    """HELD connections that each send one request, read its answer, then send one byte of
    the next request (and nothing more)."""
    held = []
    try:
        for _ in range(HELD):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                held.append(sock)
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                sock.recv(4096)
                sock.sendall(b"G")
        time.sleep(6)  # past the keep-alive timeout
        yield held
    finally:
        for sock in held:
            sock.close()


def answered_within(url: str, bound_s: float) -> bool:
    started = time.monotonic()
    try:
        _status(url, timeout=bound_s)
    except httpx.TransportError:
        return False
    return time.monotonic() - started < bound_s


@pytest.fixture
def agent(lab: Lab) -> Iterator[tuple[str, int]]:
    """An agent for node1 on loopback, with a token: its URL and PID."""
    port = _next_port()
    lab.set("agent", "port", str(port))
    lab.set("agent", "token", '"agent-secret"')
    log = (lab.dir / "agent.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "pghad", "agent", "--config", str(lab.config_path), "--node",
         "node1"],
        stdout=log,
        stderr=log,
        cwd=REPO,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), 15, what="the agent")
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return _status(url + "/health") == 200
    return False


def test_held_connections_leave_the_api_answering(lab: Lab, daemon: DaemonProcess) -> None:
    daemon.start().wait_healthy()
    port = int(daemon.api.rsplit(":", 1)[1])
    with held_connections(port):
        for _ in range(3):
            assert answered_within(daemon.api + "/health", 1.0)
            time.sleep(0.5)


def test_held_connections_leave_the_agent_answering(agent: tuple[str, int]) -> None:
    agent_url = agent[0]
    port = int(agent_url.rsplit(":", 1)[1])
    with held_connections(port):
        for _ in range(3):
            assert answered_within(agent_url + "/health", 1.0)
            assert answered_within(agent_url + "/primary", 1.0)
            time.sleep(0.5)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_one_gib_body_without_the_token_is_refused_at_once(agent: tuple[str, int]) -> None:
    agent_url, pid = agent
    port = int(agent_url.rsplit(":", 1)[1])
    size = 1 << 30
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        f"POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    )
    sock.sendall(head.encode())
    sent = [0]

    def stream() -> None:
        chunk = b"0" * (1 << 20)
        with contextlib.suppress(OSError):
            while sent[0] < size:
                sock.sendall(chunk)
                sent[0] += len(chunk)

    sender = threading.Thread(target=stream, daemon=True)
    started = time.monotonic()
    sender.start()
    sock.settimeout(60)
    answer = sock.recv(200)
    waited = time.monotonic() - started
    sender.join(timeout=60)
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    assert status in (401, 413), answer
    assert waited < 2.0, f"answered after {waited:.1f} s ({sent[0] >> 20} MiB sent)"
    peak = _peak_rss_mb(pid)
    assert peak < 150, f"the agent's peak memory was {peak:.0f} MB"
