"""The lab: a local primary and streaming standby on 127.0.0.1, no Docker and no root needed."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from pghad.config.model import Config, LocalNodeConfig, load_config
from pghad.errors import ConfigError, SetupError
from pghad.lab.files import PG_HBA, POSTGRESQL_CONF, write_config
from pghad.lab.s3 import lab_s3_down
from pghad.nodes.base import Role
from pghad.nodes.conninfo import admin_conninfo
from pghad.nodes.local import LocalDriver
from pghad.system import files, pgbin, procs, runas

MARKER = "lab.json"
DEFAULT_FIRST_PORT = 15432
NODE_NAMES = ("node1", "node2")


@dataclass(frozen=True)
class NodeStatus:
    name: str
    port: int
    running: bool
    role: Role


def free_port(start: int, taken: set[int] | None = None) -> int:
    for port in range(start, start + 1000):
        if port in (taken or set()):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise SetupError(f"no free TCP port in {start}-{start + 999}; pass --port with a free range")


def _local(config: Config, name: str) -> LocalNodeConfig:
    """The node as its own host runs it (a namespace lab's nodes are agent nodes)."""
    from pghad.agent.service import local_config

    return local_config(config.node(name))


def _drivers(config: Config, bin_dir: Path, user: str) -> dict[str, LocalDriver]:
    nodes = [_local(config, n.name) for n in config.nodes]
    return {n.name: LocalDriver(n, config.auth, bin_dir, os_user=user) for n in nodes}


def _run_as(user: str, argv: list[str]) -> None:
    result = subprocess.run(
        [*runas.prefix_for(user), *argv], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SetupError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}")


def _prepare_dirs(lab_dir: Path, config: Config, user: str) -> None:
    for node in (_local(config, n.name) for n in config.nodes):
        for path in (node.data_dir.parent, node.socket_dir):
            if path is not None:
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o700)
                runas.chown_to(path, user)


def _initdb(driver: LocalDriver, config: Config, user: str) -> None:
    data = driver.data_dir
    pwfile = data.parent / "pwfile"
    pwfile.write_text(config.auth.password + "\n")
    runas.chown_to(pwfile, user)
    try:
        _run_as(
            user,
            [
                str(driver.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )
    finally:
        pwfile.unlink(missing_ok=True)
    owner = files.owner_ids(data)
    conf = data / "postgresql.conf"
    files.write_file(conf, ((files.read_text(conf) or "") + POSTGRESQL_CONF).encode(), owner)
    hba = PG_HBA.format(repl_user=config.auth.replication_user)
    files.write_file(data / "pg_hba.conf", hba.encode(), owner)


def _create_replication_role(config: Config) -> None:
    primary = config.nodes[0]
    with psycopg.connect(admin_conninfo(primary, config.auth), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (config.auth.replication_user,)
        ).fetchone()
        if exists is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD {}").format(
                    sql.Identifier(config.auth.replication_user),
                    sql.Literal(config.auth.replication_password),
                )
            )


def _timeline(driver: LocalDriver) -> int:
    out = subprocess.run(
        [str(driver.bin_dir / "pg_controldata"), str(driver.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Latest checkpoint's TimeLineID:"):
            return int(line.split(":")[1])
    return 0


def _role_on_disk(driver: LocalDriver) -> Role:
    return Role.STANDBY if (driver.data_dir / "standby.signal").exists() else Role.PRIMARY


async def _start_nodes(drivers: dict[str, LocalDriver]) -> None:
    one, two = drivers.values()
    if _role_on_disk(one) is Role.PRIMARY and _role_on_disk(two) is Role.PRIMARY:
        # Both were left writable (a crash mid-failover): keep the newer timeline, rewind the other.
        newer, older = (one, two) if _timeline(one) >= _timeline(two) else (two, one)
        await newer.start(Role.PRIMARY)
        await older.stop()
        await older.rewind(newer.node)
        await older.start(Role.STANDBY, newer.node)
        return
    primary, standby = (one, two) if _role_on_disk(one) is Role.PRIMARY else (two, one)
    await primary.start(Role.PRIMARY)
    await standby.start(Role.STANDBY, primary.node)


def lab_up(lab_dir: Path, first_port: int | None = None, api_port: int = 8088) -> Config:
    """Create the lab on first use, or start what is stopped; a running lab is left untouched."""
    lab_dir = lab_dir.resolve()
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.chmod(0o755)
    user = runas.ensure_lab_user()
    config_path = lab_dir / "config.toml"
    if not config_path.exists():
        bin_dir = runas.usable_bin_dir(pgbin.find_bin_dir(), user)
        port1 = free_port(first_port or DEFAULT_FIRST_PORT)
        write_config(lab_dir, port1, free_port(port1 + 1), bin_dir, api_port)
        (lab_dir / MARKER).write_text(json.dumps({"user": user, "created": time.time()}))
    config = load_config(config_path)
    bin_dir = pgbin.find_bin_dir(config.pg_bin)
    _prepare_dirs(lab_dir, config, user)
    drivers = _drivers(config, bin_dir, user)
    first, second = drivers.values()
    created = False
    if not (first.data_dir / "PG_VERSION").exists():
        _initdb(first, config, user)
        created = True
    if created:
        asyncio.run(first.start(Role.PRIMARY))
        _create_replication_role(config)
    if not (second.data_dir / "PG_VERSION").exists():
        asyncio.run(first.start(Role.PRIMARY))
        asyncio.run(second.clone(first.node))
    asyncio.run(_start_nodes(drivers))
    return config


def lab_config(lab_dir: Path) -> Config:
    path = lab_dir.resolve() / "config.toml"
    if not (lab_dir / MARKER).exists():
        raise SetupError(f"{lab_dir} holds no lab; create one with `pghad lab up --dir {lab_dir}`")
    return load_config(path)


def lab_status(lab_dir: Path) -> list[NodeStatus]:
    config = lab_config(lab_dir)
    bin_dir = pgbin.find_bin_dir(config.pg_bin)
    statuses = []
    for node in (_local(config, n.name) for n in config.nodes):
        driver = LocalDriver(node, config.auth, bin_dir)
        running = procs.live_postmaster(node.data_dir) is not None
        statuses.append(NodeStatus(node.name, node.port, running, _role_on_disk(driver)))
    return statuses


def lab_down(lab_dir: Path) -> None:
    config = lab_config(lab_dir)
    bin_dir = pgbin.find_bin_dir(config.pg_bin)

    async def stop_all() -> None:
        drivers = [LocalDriver(_local(config, n.name), config.auth, bin_dir) for n in config.nodes]
        # Stop the primary first so the standby receives every WAL record before it stops.
        drivers.sort(key=lambda d: _role_on_disk(d) is Role.STANDBY)
        for driver in drivers:
            await driver.stop()

    asyncio.run(stop_all())
    lab_s3_down(lab_dir)


def lab_destroy(lab_dir: Path) -> None:
    from pghad.lab.hosts import lab_destroy_hosts

    lab_dir = lab_dir.resolve()
    if not (lab_dir / MARKER).exists():
        raise SetupError(f"{lab_dir} holds no lab (no {MARKER}); refusing to delete it")
    lab_destroy_hosts(lab_dir)
    lab_s3_down(lab_dir)
    try:
        data_dirs = [node.data_dir for node in load_config(lab_dir / "config.toml").nodes]
    except ConfigError:
        data_dirs = sorted(lab_dir.glob("*/data"))  # an edited, broken config must not stop it
    for data_dir in data_dirs:
        for _ in range(50):
            if not procs.kill_all_in(data_dir):
                break
            time.sleep(0.1)
    procs.reap_postgres_zombies()
    shutil.rmtree(lab_dir)
