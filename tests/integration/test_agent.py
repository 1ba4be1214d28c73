"""The agent on its own: TLS, token, lease, health checks, on the local lab (no namespaces)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import site
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pghad.config.model import Config
from pghad.errors import NodeError
from pghad.nodes.agent import AgentClient, LeaseRefused
from pghad.nodes.agent_api import (
    Done,
    Fence,
    Fenced,
    Health,
    Heartbeat,
    HeartbeatAnswer,
    Process,
    Start,
    Stop,
)
from pghad.nodes.base import Role
from pghad.nodes.conninfo import admin_conninfo
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin, runas
from tests.support.chaos import is_writable, log_events, wait_for
from tests.support.haproxy import primary_listener

from ..conftest import REPO, Lab, _next_port


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "agent.crt", directory / "agent.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def agent(lab: Lab, tmp_path: Path) -> Iterator[tuple[Config, str]]:
    cert, key = self_signed(tmp_path)
    port = _next_port()
    for key_name, value in (
        ("bind", '"127.0.0.1"'),
        ("port", str(port)),
        ("token", '"agent-secret"'),
        ("tls_cert", f'"{cert}"'),
        ("tls_key", f'"{key}"'),
        ("ca_file", f'"{cert}"'),
    ):
        lab.set("agent", key_name, value)
    log = (lab.dir / "agent.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "pghad", "agent", "--config", str(lab.config_path), "--node",
         "node1"],
        stdout=log,
        stderr=log,
        cwd=REPO,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    client = AgentClient(url, "agent-secret", cert, "probe")
    while True:
        try:
            asyncio.run(client.call("GET", "/health", Health))
            break
        except NodeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield lab.config, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_the_agent_serves_tls_wants_its_token_and_one_lease_holder(
    agent: tuple[Config, str],
) -> None:
    config, url = agent
    ca = config.agent.ca_file
    one = AgentClient(url, "agent-secret", ca, "daemon-one")
    beat = Heartbeat(holder="daemon-one", host="host-one")
    answer = asyncio.run(one.call("POST", "/heartbeat", HeartbeatAnswer, beat))
    assert answer.node == "node1" and answer.server == "running"
    assert answer.peer is not None
    assert answer.peer.name == "node2" and answer.peer.reachable is True

    with pytest.raises(NodeError, match="401"):
        asyncio.run(
            AgentClient(url, "wrong", ca, "x").call("POST", "/heartbeat", HeartbeatAnswer, beat)
        )
    with pytest.raises(NodeError, match=r"unreachable.*CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(AgentClient(url, "agent-secret", None, "x").call("GET", "/health", Health))

    other = AgentClient(url, "agent-secret", ca, "daemon-two")
    beat_two = Heartbeat(holder="daemon-two", host="host-two")
    with pytest.raises(LeaseRefused, match="host-one"):
        asyncio.run(other.call("POST", "/heartbeat", HeartbeatAnswer, beat_two))
    with pytest.raises(LeaseRefused):  # nor may it change the node
        asyncio.run(other.call("POST", "/stop", Done, Stop(mode="fast")))
    too_long = {"holder": "daemon-one", "host": "host-one", "ttl": 3600.0}
    headers = {"Authorization": "Bearer agent-secret"}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as http:
        refused = http.post(url + "/heartbeat", json=too_long, headers=headers, timeout=5)
    assert refused.status_code == 422  # a lease may not keep other daemons out for an hour


def test_the_health_checks_answer_without_a_token(agent: tuple[Config, str]) -> None:
    config, url = agent
    context = ssl.create_default_context(cafile=str(config.agent.ca_file))
    with httpx.Client(verify=context, timeout=5) as http:
        primary = http.get(url + "/primary")
        assert primary.status_code == 200 and primary.json() == {"node": "node1", "primary": True}
        replica = http.get(url + "/replica")
        assert replica.status_code == 503 and replica.json()["replica"] is False


def test_an_agent_bound_off_loopback_without_a_token_refuses_to_start(lab: Lab) -> None:
    lab.set("agent", "bind", '"0.0.0.0"')
    result = subprocess.run(
        [sys.executable, "-m", "pghad", "agent", "--config", str(lab.config_path), "--node",
         "node1"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "agent.token" in result.stderr and str(lab.config_path) in result.stderr


OTHER_CAS = "/etc/ssl/certs/ca-certificates.crt"  # the system's, none of which signed the agent's


def _haproxy_status(socket_path: Path, server: str = "node1") -> str:
    """A server's check status in HAProxy's "show stat" (UP, DOWN, ...); "" if not answered."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(socket_path))
            sock.sendall(b"show stat\n")
            answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    except OSError:
        return ""
    rows = [row.split(",") for row in answer.splitlines() if row.startswith(f"primary,{server},")]
    return rows[0][17] if rows else ""


def test_haproxy_checks_a_tls_agent_against_its_ca(
    agent: tuple[Config, str], tmp_path: Path
) -> None:
    """The README's HAProxy check over TLS, with the certificate verified: node1 is UP while its
    agent answers /primary with 200, DOWN once its server stops, UP again after a start; checked
    against other CAs, the same agent is never UP."""
    config, url = agent
    node = config.local_node("node1")
    port, socket_path = _next_port(), tmp_path / "haproxy.sock"
    server = f"127.0.0.1:{node.port} check port {url.rsplit(':', 1)[1]}"
    servers = [f"server node1 {server}", f"server untrusted {server} ca-file {OTHER_CAS}"]
    checks = f"inter 200ms fall 2 rise 1 check-ssl verify required ca-file {config.agent.ca_file}"
    stats = f"stats socket {socket_path} level admin"
    (tmp_path / "haproxy.cfg").write_text(primary_listener(port, checks, servers, stats))
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")])
    driver = LocalDriver(node, config.auth, pgbin.find_bin_dir(config.pg_bin))
    try:
        wait_for(lambda: _haproxy_status(socket_path) == "UP", 15, what="node1 UP in HAProxy")
        wait_for(
            lambda: _haproxy_status(socket_path, "untrusted") == "DOWN",
            15,
            what="the agent DOWN when checked against other CAs",
        )
        assert _haproxy_status(socket_path) == "UP"
        through = make_conninfo(admin_conninfo(node, config.auth), port=port)
        with psycopg.connect(through, autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        asyncio.run(driver.stop())
        wait_for(lambda: _haproxy_status(socket_path) == "DOWN", 15, what="node1 DOWN")
        asyncio.run(driver.start(Role.PRIMARY))
        wait_for(lambda: _haproxy_status(socket_path) == "UP", 15, what="node1 UP again")
    finally:
        haproxy.terminate()
        haproxy.wait(timeout=10)
        asyncio.run(driver.start(Role.PRIMARY))


def test_an_agent_run_as_the_data_owner_fences_stops_and_starts_its_server(lab: Lab) -> None:
    """As systemd/pghad-agent.service runs it (User=postgres): no root, no runuser. The agent's
    own Python must be one that user can execute (the test's lives under /root): Debian's, with
    this virtualenv's packages."""
    system_python = Path("/usr/bin/python3")
    if not system_python.exists():
        pytest.skip(f"no {system_python}")
    version = subprocess.run(
        [str(system_python), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"{system_python} is Python {version}, not this virtualenv's")
    node = lab.config.local_node("node1")
    owner = runas.owner_of(node.data_dir)
    assert owner != "root"
    port = _next_port()
    lab.set("agent", "port", str(port))
    lab.set("agent", "token", '"agent-secret"')
    readable = lab.dir / "agent-config.toml"  # the lab's config is root's alone
    shutil.copy(lab.config_path, readable)
    runas.chown_to(readable, owner)
    log = (lab.dir / "agent-owner.log").open("ab")
    process = subprocess.Popen(
        [*runas.prefix_for(owner), str(system_python), "-m", "pghad", "agent", "--config",
         str(readable), "--node", "node1"],
        stdout=log,
        stderr=log,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO}:{site.getsitepackages()[0]}"},
    )  # fmt: skip
    client = AgentClient(f"http://127.0.0.1:{port}", "agent-secret", None, "probe")
    try:
        wait_for(lambda: _answers(client), 20, what="the agent answering")
    except AssertionError:
        raise AssertionError((lab.dir / "agent-owner.log").read_text()[-3000:]) from None
    try:
        agent_pid = [p for p in _children(process.pid) if b"agent" in _cmdline(p)][-1]
        assert Path(f"/proc/{agent_pid}").stat().st_uid == node.data_dir.stat().st_uid
        assert "immediate" in asyncio.run(client.call("POST", "/fence", Fenced, Fence())).detail
        assert is_writable(lab.config, "node1") is None
        asyncio.run(client.call("POST", "/start", Done, Start(role=Role.PRIMARY)))
        assert is_writable(lab.config, "node1") is True
        asyncio.run(client.call("POST", "/stop", Done, Stop(mode="fast")))
        assert asyncio.run(client.call("GET", "/process", Process)).server == "stopped"
        asyncio.run(client.call("POST", "/start", Done, Start(role=Role.PRIMARY)))
        assert is_writable(lab.config, "node1") is True
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def _answers(client: AgentClient) -> bool:
    try:
        asyncio.run(client.call("GET", "/health", Health))
    except NodeError:
        return False
    return True


def _children(pid: int) -> list[int]:
    found = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            found += _children(int(child))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_sighup_applies_a_new_token_and_keeps_running_on_a_bad_config(
    lab: Lab, agent: tuple[Config, str]
) -> None:
    _config, url = agent
    pid = next(
        p
        for p in (int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit())
        if b"agent" in _cmdline(p) and str(lab.config_path).encode() in _cmdline(p)
    )
    cert = lab.config.agent.ca_file

    def status(token: str) -> int:
        try:
            asyncio.run(AgentClient(url, token, cert, "probe").call("GET", "/process", Process))
        except NodeError as exc:
            return 401 if " 401 " in str(exc) else 0
        return 200

    lab.set("agent", "token", '"rotated-secret"')
    lab.set("agent", "peer_interval", "0.5")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: status("rotated-secret") == 200, 10, what="the new token accepted")
    assert status("agent-secret") == 401
    reloaded = [e for e in log_events(lab.dir / "agent.log") if e["event"] == "config_reloaded"]
    assert reloaded[-1]["needs_restart"] == ["agent.peer_interval"]
    good = lab.config_path.read_text()
    lab.config_path.write_text(good + "\n[agent\n")  # not TOML
    os.kill(pid, signal.SIGHUP)
    wait_for(
        lambda: any(
            e["event"] == "config_reload_failed" for e in log_events(lab.dir / "agent.log")
        ),
        10,
        what="the reload refused",
    )
    assert status("rotated-secret") == 200  # running, on the config it had
    lab.config_path.write_text(good)
