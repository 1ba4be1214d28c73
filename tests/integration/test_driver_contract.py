"""One contract for node drivers, run against the local driver and the docker driver alike.

The docker half runs a primary and its standby in containers of its own (tests/support/
docker_pair.py, the compose deployment's image and scripts); the engine and the stand-in images
are prepared as for the compose suite when missing, and a machine where that fails fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from pghad.config.model import Config
from pghad.decide.observation import parse_lsn
from pghad.errors import SetupError
from pghad.nodes import sql as sqlops
from pghad.nodes.base import NodeDriver, Role
from pghad.nodes.docker import docker_client
from pghad.nodes.local import LocalDriver
from pghad.system import pgbin
from tests.support.chaos import is_writable, streaming_standbys, wait_for
from tests.support.compose_stack import prepare_engine
from tests.support.docker_pair import docker_pair

from ..conftest import Lab


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    try:
        prepare_engine()
        client = docker_client()
    except (RuntimeError, SetupError) as exc:
        pytest.fail(f"the docker driver's contract needs a Docker engine: {exc}")
    yield client
    client.close()


@pytest.fixture(params=["local", "docker"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Config, dict[str, NodeDriver]]]:
    if request.param == "docker":
        with docker_pair(request.getfixturevalue("docker_engine")) as containers:
            yield containers.config, dict(containers.drivers)
        return
    lab: Lab = request.getfixturevalue("lab")
    config = lab.config
    bin_dir = pgbin.find_bin_dir(config.pg_bin)
    nodes = [config.local_node(n.name) for n in config.nodes]
    yield config, {n.name: LocalDriver(n, config.auth, bin_dir) for n in nodes}


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
