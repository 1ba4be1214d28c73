"""`pghad lab up --hosts`: the lab as three hosts on one machine, for tests of real partitions.

node1, node2 and the daemon's host ("witness") are network namespaces joined by a bridge in the
root namespace, each with a private address that exists only there (10.231.N.11, .12, .10; the
bridge is .1, so this host's programs reach them all). Each node host runs `pghad agent`, which
runs its PostgreSQL server; the daemon is started in the witness namespace. lab.json lists each
host's namespace, the root-side interface of its link and its address, so a test can cut a link
(`ip link set IFACE down`), or drop and delay packets inside one namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import tenacity
import tomlkit
from pydantic import BaseModel

from pghad.config.model import load_config
from pghad.errors import SetupError
from pghad.lab.local import MARKER, lab_down, lab_up
from pghad.nodes.agent_api import Start
from pghad.nodes.base import Role
from pghad.system import files, procs

AGENT_PORT = 8089
HOSTS = ("node1", "node2", "witness")
HOST_NUMBER = {"witness": 10, "node1": 11, "node2": 12}
REPO_ROOT = Path(__file__).resolve().parents[2]
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def _ip(*args: str, check: bool = True) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise SetupError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


def network_of(lab_dir: Path) -> dict[str, Any]:
    """Names and addresses for this lab (stable for its directory, distinct between labs)."""
    tag = zlib.crc32(str(lab_dir.resolve()).encode()) % 200 + 20
    hosts = {
        name: {
            "netns": f"pghad{tag}-{name}",
            "interface": f"pgh{tag}{name[0]}{name[-1]}",
            "address": f"10.231.{tag}.{HOST_NUMBER[name]}",
        }
        for name in HOSTS
    }
    return {"bridge": f"pgh{tag}br", "gateway": f"10.231.{tag}.1", "subnet": tag, "hosts": hosts}


def _make_network(net: dict[str, Any]) -> None:
    bridge = net["bridge"]
    _remove_network(net)
    _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "add", f"{net['gateway']}/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    # Bridged frames may pass iptables' FORWARD chain (br_netfilter, loaded by Docker, whose rules
    # reject what is not its own bridges'): let the lab's hosts talk to each other.
    subprocess.run(["iptables", "-I", "FORWARD", "1", *_forward(bridge)], check=False)
    for host in net["hosts"].values():
        ns, iface = host["netns"], host["interface"]
        _ip("netns", "add", ns)
        _ip("link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", iface, "master", bridge)
        _ip("link", "set", iface, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{host['address']}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "route", "add", "default", "via", net["gateway"])


def _forward(bridge: str) -> list[str]:
    return ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def _remove_network(net: dict[str, Any]) -> None:
    rule = ["iptables", "-D", "FORWARD", *_forward(net["bridge"])]
    while subprocess.run(rule, capture_output=True, check=False).returncode == 0:
        pass  # every copy of the rule (a lab brought up twice)
    for host in net["hosts"].values():
        _ip("netns", "del", host["netns"], check=False)
        _ip("link", "del", host["interface"], check=False)
    _ip("link", "del", net["bridge"], check=False)


def _as_hosts(config_path: Path, net: dict[str, Any]) -> None:
    """The lab's config with agent nodes at their namespace addresses."""
    doc = tomlkit.parse(config_path.read_text())
    for node in doc["nodes"]:
        address = net["hosts"][node["name"]]["address"]
        node["host"] = address
        node["driver"] = "agent"
        node["agent_url"] = f"http://{address}:{AGENT_PORT}"
    agent = tomlkit.table()
    agent["bind"] = "0.0.0.0"
    agent["port"] = AGENT_PORT
    agent["token"] = secrets.token_urlsafe(24)
    agent["run_dir"] = str(config_path.parent / "agent-run")
    agent["plain_http"] = True  # the lab's private namespace network
    doc["agent"] = agent
    doc["api"]["bind"] = net["hosts"]["witness"]["address"]
    with files.create_private(config_path.with_suffix(".tmp")) as handle:
        handle.write(tomlkit.dumps(doc).encode())
    config_path.with_suffix(".tmp").replace(config_path)


def _allow_subnet(data_dir: Path, net: dict[str, Any]) -> None:
    hba = data_dir / "pg_hba.conf"
    text = files.read_text(hba) or ""
    subnet = f"10.231.{net['subnet']}.0/24"
    if subnet not in text:
        owner = files.owner_ids(hba)
        text = text.replace("127.0.0.1/32", subnet)
        files.write_file(hba, text.encode(), owner)


def _agent_url(net: dict[str, Any], node: str) -> str:
    return f"http://{net['hosts'][node]['address']}:{AGENT_PORT}"


def _wait_agent(net: dict[str, Any], node: str, deadline: float) -> None:
    waiting = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(httpx.TransportError),
        stop=tenacity.stop_after_delay(max(deadline - time.monotonic(), 0.0)),
        wait=tenacity.wait_fixed(0.1),
        reraise=True,
    )
    try:
        for attempt in waiting:
            with attempt:
                httpx.get(_agent_url(net, node) + "/health", timeout=1, trust_env=False)
    except httpx.TransportError as exc:
        raise SetupError(f"the agent of {node} did not answer within the deadline") from exc


def _post(net: dict[str, Any], node: str, path: str, body: BaseModel, token: str) -> None:
    response = httpx.post(
        _agent_url(net, node) + path,
        content=body.model_dump_json(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        timeout=120,
        trust_env=False,
    )
    if not response.is_success:
        raise SetupError(f"the agent of {node}: {path}: {response.status_code} {response.text}")


def start_agent(lab_dir: Path, net: dict[str, Any], node: str) -> int:
    with (lab_dir / f"agent-{node}.log").open("ab") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", net["hosts"][node]["netns"], sys.executable, "-m", "pghad",
             "agent", "--config", str(lab_dir / "config.toml"), "--node", node],
            stdout=log,
            stderr=log,
            cwd=REPO_ROOT,
            start_new_session=True,
        )  # fmt: skip
    _STARTED[process.pid] = process  # waited for by lab_destroy_hosts (no zombie, no warning)
    return process.pid


def lab_up_hosts(lab_dir: Path, first_port: int | None = None) -> dict[str, Any]:
    """Build (or restart) the lab as three namespace hosts; returns lab.json's network part."""
    lab_dir = lab_dir.resolve()
    config_path = lab_dir / "config.toml"
    net = network_of(lab_dir)
    if not config_path.exists() or "[agent]" not in config_path.read_text():
        config = lab_up(lab_dir, first_port)  # the single-host lab first, then moved apart
        lab_down(lab_dir)
        for node in config.nodes:
            _allow_subnet(node.data_dir, net)
        _as_hosts(config_path, net)
    else:
        lab_destroy_hosts(lab_dir)  # agents and network afresh; the data stays
        lab_down(lab_dir)
    config = load_config(config_path)
    primary = next(n.name for n in config.nodes if not (n.data_dir / "standby.signal").exists())
    _make_network(net)
    token = config.agent.token
    pids = {name: start_agent(lab_dir, net, name) for name in ("node1", "node2")}
    deadline = time.monotonic() + 20
    for name in pids:
        _wait_agent(net, name, deadline)
    standby = "node2" if primary == "node1" else "node1"
    _post(net, primary, "/start", Start(role=Role.PRIMARY), token)
    _post(net, standby, "/start", Start(role=Role.STANDBY, primary=primary), token)
    marker = json.loads((lab_dir / MARKER).read_text())
    marker.update({"network": net, "agents": pids})
    (lab_dir / MARKER).write_text(json.dumps(marker, indent=2))
    return net


def lab_destroy_hosts(lab_dir: Path) -> None:
    """Stop the agents and remove the namespaces and the bridge (the lab's files stay for
    `lab destroy`, which calls this first)."""
    marker_path = lab_dir.resolve() / MARKER
    if not marker_path.exists():
        return
    marker = json.loads(marker_path.read_text())
    for pid in (marker.get("agents") or {}).values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    time.sleep(0.3)
    for pid in (marker.get("agents") or {}).values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    for pid in (marker.get("agents") or {}).values():
        started = _STARTED.pop(pid, None)
        if started is not None:
            started.wait(timeout=10)
    procs.reap_postgres_zombies()
    if marker.get("network"):
        _remove_network(marker["network"])
