"""A primary and its standby in containers, as docker-compose.yml configures them, for the
docker driver's contract tests.

The containers run the stand-in postgres:18 image (scripts/stand-in-images.sh builds it: no
registry is reachable here) with the compose deployment's own scripts and settings (config/master,
config/slave), started with testcontainers; its reaper (Ryuk) is disabled, since its image cannot
be pulled either, so the fixture removes what it started itself. Everything is named after one
random token: the Docker engine may be shared with other runs.

The nodes have fixed addresses on a network of their own: pghad (on this host) and the containers
reach each other by them, and a node keeps its address when the driver stops and starts its
container, while the driver's one-off containers take theirs from another range of the subnet.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError
from docker.types import EndpointConfig, IPAMConfig, IPAMPool
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from pghad.config.model import Config, DockerNodeConfig, parse_config
from pghad.nodes.docker import ONE_OFF_LABEL, DockerDriver
from tests.support.chaos import is_writable, streaming_standbys, wait_for
from tests.support.compose_stack import REPO

IMAGE = "postgres:18"
DATA_DIR = "/var/lib/postgresql/18/docker"  # PGDATA in docker-compose.yml
SUPERUSER_PASSWORD = "contract-superuser-secret"
REPLICATION_PASSWORD = "contract-replication-secret"
ENDPOINT_API = "1.41"  # the oldest engine API the stand-ins run on (Debian 12's 20.10)
START_TIMEOUT_S = 90


@dataclass
class DockerPair:
    config: Config
    drivers: dict[str, DockerDriver]


def _network(token: str) -> tuple[Network, str]:
    """A bridge network of its own, on a /24 no other network uses: nodes at .10 and .11, the
    engine's own choices (one-off containers) from .128 up."""
    last: APIError | None = None
    for _ in range(20):
        prefix = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        pool = IPAMPool(subnet=f"{prefix}.0/24", iprange=f"{prefix}.128/25")
        network = Network(
            docker_network_kw={
                "driver": "bridge",
                "ipam": IPAMConfig(pool_configs=[pool]),
                "labels": {"pghad.test": token},
            }
        )
        network.name = f"pghad-contract-{token}"
        try:
            return network.create(), prefix
        except APIError as exc:  # the subnet is taken: try another
            last = exc
    raise AssertionError(f"no free subnet for the contract network: {last}")


def _node(
    name: str, token: str, network: Network, address: str
) -> tuple[DockerContainer, dict[str, Any]]:
    endpoint = EndpointConfig(ENDPOINT_API, ipv4_address=address)
    container = DockerContainer(IMAGE)
    container.with_name(f"pghad-contract-{token}-{name}")
    container.with_envs(
        POSTGRES_PASSWORD=SUPERUSER_PASSWORD,
        REPLICATION_USER="replicator",
        REPLICATION_PASSWORD=REPLICATION_PASSWORD,
        PGDATA=DATA_DIR,
    )
    return container, {"network": network.name, "networking_config": {network.name: endpoint}}


def _config(token: str, nodes: dict[str, str]) -> Config:
    text = (
        f'[auth]\npassword = "{SUPERUSER_PASSWORD}"\nreplication_user = "replicator"\n'
        f'replication_password = "{REPLICATION_PASSWORD}"\n'
    )
    for name, address in nodes.items():
        text += (
            f'[[nodes]]\nname = "{name}"\nhost = "{address}"\nport = 5432\n'
            f'data_dir = "{DATA_DIR}"\ndriver = "docker"\n'
            f'container = "pghad-contract-{token}-{name}"\n'
        )
    return parse_config(text)


def _remove_one_offs(client: Any, names: list[str]) -> None:
    for name in names:
        for leftover in client.containers.list(
            all=True, filters={"label": f"{ONE_OFF_LABEL}={name}"}
        ):
            leftover.remove(force=True)


@contextmanager
def docker_pair(client: Any) -> Iterator[DockerPair]:
    """A primary and a standby streaming from it, removed (with their volumes) on exit."""
    testcontainers_config.ryuk_disabled = True
    token = secrets.token_hex(4)
    primary, standby = f"contract_{token}_primary", f"contract_{token}_standby"
    with ExitStack() as cleanup:
        network, prefix = _network(token)
        cleanup.callback(network.remove)
        addresses = {primary: f"{prefix}.10", standby: f"{prefix}.11"}
        config = _config(token, addresses)

        master, kwargs = _node(primary, token, network, addresses[primary])
        for script, target in (
            ("init-primary.sh", "/docker-entrypoint-initdb.d/10-pghad.sh"),
            ("postgresql.pghad.conf", "/etc/pghad/postgresql.pghad.conf"),
            ("pg_hba.pghad.conf", "/etc/pghad/pg_hba.pghad.conf"),
        ):
            master.with_volume_mapping(REPO / "config" / "master" / script, target, "ro")
        master.with_kwargs(**kwargs)
        cleanup.callback(master.stop)
        master.start()
        wait_for(lambda: is_writable(config, primary) is True, START_TIMEOUT_S, 0.5, "primary up")

        slave, kwargs = _node(standby, token, network, addresses[standby])
        slave.with_env("MASTER_HOST", addresses[primary])
        clone = "/usr/local/bin/pghad-clone-and-start.sh"
        slave.with_volume_mapping(REPO / "config" / "slave" / "clone-and-start.sh", clone, "ro")
        slave.with_kwargs(**kwargs, entrypoint=[clone])
        cleanup.callback(slave.stop)
        slave.start()
        # Under the name clone-and-start.sh gives it (pg_basebackup's own stream comes first).
        wait_for(
            lambda: "postgres_slave" in streaming_standbys(config, primary),
            START_TIMEOUT_S,
            0.5,
            "the standby streaming",
        )
        # The driver's one-off containers share the nodes' volumes: removed before the nodes.
        cleanup.callback(_remove_one_offs, client, [primary, standby])
        nodes = [n for n in config.nodes if isinstance(n, DockerNodeConfig)]
        yield DockerPair(config, {n.name: DockerDriver(n, config.auth, client) for n in nodes})
