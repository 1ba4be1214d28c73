"""The agent on its own: TLS, token, lease, health checks, on the local lab (no namespaces)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pghad.config import Config
from pghad.errors import NodeError
from pghad.nodes.agent import AgentClient, LeaseRefused

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
            asyncio.run(client.call("GET", "/health"))
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
    beat = {"holder": "daemon-one", "host": "host-one", "ttl": 10.0}
    answer = asyncio.run(one.call("POST", "/heartbeat", beat))
    assert answer["node"] == "node1" and answer["server"] == "running"
    assert answer["peer"]["name"] == "node2" and answer["peer"]["reachable"] is True

    with pytest.raises(NodeError, match="401"):
        asyncio.run(AgentClient(url, "wrong", ca, "x").call("POST", "/heartbeat", beat))
    with pytest.raises(NodeError, match="unreachable"):  # a certificate nobody vouched for
        asyncio.run(AgentClient(url, "agent-secret", None, "x").call("GET", "/health"))

    other = AgentClient(url, "agent-secret", ca, "daemon-two")
    beat_two = {"holder": "daemon-two", "host": "host-two", "ttl": 10.0}
    with pytest.raises(LeaseRefused, match="host-one"):
        asyncio.run(other.call("POST", "/heartbeat", beat_two))
    with pytest.raises(LeaseRefused):  # nor may it change the node
        asyncio.run(other.call("POST", "/stop", {"mode": "fast"}))


def test_the_health_checks_answer_without_a_token(agent: tuple[Config, str]) -> None:
    config, url = agent
    context = ssl.create_default_context(cafile=str(config.agent.ca_file))
    with urllib.request.urlopen(url + "/primary", context=context, timeout=5) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "/replica", context=context, timeout=5)
    assert refused.value.code == 503
    refused.value.close()


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
