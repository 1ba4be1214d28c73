"""Everything built from one Config: nodes, executor, procedures, backups.

SIGHUP builds a new Runtime and swaps it whole, so no part keeps settings of an older config. An
operation already running finishes with the Runtime it started with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from pghad.act.executor import Executor
from pghad.act.procedures import Intend, Procedures
from pghad.act.requests import Act, Failback, Failover, Request, Result, Switchover, TakeBackup
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupStatus
from pghad.backup.runner import BackupRunner
from pghad.config.model import AgentNodeConfig, Config, DockerNodeConfig
from pghad.daemon.memory_file import load_history
from pghad.decide.model import Memory
from pghad.nodes.agent import AgentDriver
from pghad.nodes.base import NodeDriver
from pghad.nodes.docker import DockerDriver, docker_client
from pghad.nodes.local import LocalDriver
from pghad.nodes.node import Node, PgNode
from pghad.system import pgbin


def make_nodes(config: Config, docker: Any = None) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for node in config.nodes:
        driver: NodeDriver
        if isinstance(node, DockerNodeConfig):
            docker = docker or docker_client()
            driver = DockerDriver(node, config.auth, docker)
        elif isinstance(node, AgentNodeConfig):
            driver = AgentDriver(node, config)
        else:
            driver = LocalDriver(node, config.auth, pgbin.find_bin_dir(config.pg_bin))
        nodes[node.name] = PgNode(node, config.auth, driver)
    return nodes


@dataclass(frozen=True)
class Runtime:
    config: Config
    nodes: Mapping[str, Node]
    executor: Executor
    procedures: Procedures
    catalog: Catalog
    backups: BackupRunner

    @classmethod
    def build(cls, config: Config, nodes: Mapping[str, Node] | None = None) -> Runtime:
        nodes = nodes if nodes is not None else make_nodes(config)
        archive_sync = config.archive.enabled and config.archive.synchronous
        executor = Executor(nodes, config.cluster.synchronous, archive_sync)
        catalog = Catalog.of(config)
        return cls(
            config=config,
            nodes=nodes,
            executor=executor,
            procedures=Procedures(config, nodes, executor),
            catalog=catalog,
            backups=BackupRunner(
                config,
                catalog,
                pgbin.find_bin_dir(config.pg_bin),
                nodes,
                promotions=partial(load_history, config.state.dir),
            ),
        )

    async def execute(
        self, request: Request, memory: Memory, now: datetime, intend: Intend
    ) -> Result:
        """Run one request (in its own task): the actions' outcomes, an operation's result, or a
        backup record. `intend` records a promotion on disk before an operation makes it."""
        match request:
            case Act(actions, _):
                return tuple([await self.executor.run(action) for action in actions])
            case Failover(force):
                return await self.procedures.failover(
                    memory.primary, memory.standby_eligible, force, intend
                )
            case Switchover():
                return await self.procedures.switchover(intend)
            case Failback():
                preferred = self.config.preferred_primary
                pending = self.config.cluster.auto_rejoin and preferred in memory.needs_rejoin
                return await self.procedures.failback(intend, pending)
            case TakeBackup(kind):
                record = await self.backups.run(now, kind)
                if record.status is BackupStatus.OK:
                    await asyncio.to_thread(self.backups.apply_retention)
                return record
