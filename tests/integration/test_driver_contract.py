"""One contract for node drivers: run against the local driver always, docker where an engine is.

The docker half needs a running `docker compose up -d` deployment (PGHAD_COMPOSE_CONFIG names
its config file) and a reachable engine; elsewhere it is skipped with the reason printed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from pghad.config.model import Config, DockerNodeConfig, load_config
from pghad.decide.observation import parse_lsn
from pghad.errors import SetupError
from pghad.nodes import sql as sqlops
from pghad.nodes.base import NodeDriver, Role
from pghad.nodes.docker import DockerDriver, docker_client
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin
from tests.support.chaos import is_writable, streaming_standbys, wait_for

from ..conftest import Lab


def _docker_pair() -> tuple[Config, dict[str, NodeDriver]]:
    config_file = os.environ.get("PGHAD_COMPOSE_CONFIG")
    try:
        client = docker_client()
    except SetupError as exc:
        pytest.skip(f"docker driver not tested: {exc}")
    if not config_file:
        pytest.skip("docker driver not tested: set PGHAD_COMPOSE_CONFIG to the compose config")
    config = load_config(Path(config_file))
    nodes = [n for n in config.nodes if isinstance(n, DockerNodeConfig)]
    return config, {n.name: DockerDriver(n, config.auth, client) for n in nodes}


@pytest.fixture(params=["local", "docker"])
def pair(request: pytest.FixtureRequest) -> tuple[Config, dict[str, NodeDriver]]:
    if request.param == "docker":
        return _docker_pair()
    lab: Lab = request.getfixturevalue("lab")
    config = lab.config
    bin_dir = pgbin.find_bin_dir(config.pg_bin)
    nodes = [config.local_node(n.name) for n in config.nodes]
    return config, {n.name: LocalDriver(n, config.auth, bin_dir) for n in nodes}


def test_stop_start_and_fence(pair: tuple[Config, dict[str, NodeDriver]]) -> None:
    config, drivers = pair
    primary, standby = (n.name for n in config.nodes)
    assert asyncio.run(drivers[standby].is_running())
    asyncio.run(drivers[standby].stop("fast"))
    assert not asyncio.run(drivers[standby].is_running())
    assert asyncio.run(drivers[standby].fence()).startswith("not running")
    asyncio.run(drivers[standby].start(Role.STANDBY, config.node(primary)))
    assert asyncio.run(drivers[standby].is_running())
    wait_for(lambda: standby in streaming_standbys(config, primary), 20, what="streaming")
    outcome = asyncio.run(drivers[standby].fence())
    assert not outcome.startswith("not running"), outcome  # it found the server running
    assert not asyncio.run(drivers[standby].is_running())
    assert standby not in streaming_standbys(config, primary)


def test_rewind_rejoins_a_former_primary_and_clone_rebuilds_a_node(
    pair: tuple[Config, dict[str, NodeDriver]],
) -> None:
    config, drivers = pair
    old, new = (n.name for n in config.nodes)
    asyncio.run(drivers[old].fence())
    assert asyncio.run(sqlops.promote(config.node(new), config.auth))
    asyncio.run(drivers[old].rewind(config.node(new)))
    asyncio.run(drivers[old].start(Role.STANDBY, config.node(new)))
    wait_for(lambda: old in streaming_standbys(config, new), 30, what="rewound node streaming")
    assert is_writable(config, old) is False
    asyncio.run(drivers[old].stop("fast"))
    assert parse_lsn(asyncio.run(drivers[old].checkpoint_lsn())) is not None
    asyncio.run(drivers[old].clone(config.node(new)))
    asyncio.run(drivers[old].start(Role.STANDBY, config.node(new)))
    wait_for(lambda: old in streaming_standbys(config, new), 30, what="cloned node streaming")
