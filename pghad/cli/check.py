"""`pghad check`: every check a person would otherwise do by hand, each ok, warn or fail with
what to do. The exit status is the worst result: 0 ok, 1 warn, 2 fail (for cron and monitors).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from redis.exceptions import RedisError

from pghad.api.client import ApiCallFailed, ApiClient
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupKind, BackupStatus
from pghad.backup.steps import unwritable
from pghad.config.model import AgentNodeConfig, Config, NodeConfig
from pghad.decide.observation import ClusterView
from pghad.errors import NodeError
from pghad.nodes import sql as sqlops
from pghad.nodes.agent import AgentClient
from pghad.nodes.agent_api import Process
from pghad.nodes.probe import probe_node
from pghad.system.net import is_loopback

ARCHIVE_LAG_WARN_S = 60.0


class Level(IntEnum):
    OK = 0
    WARN = 1
    FAIL = 2


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    todo: str = ""

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "level": self.level.name.lower()}


async def run_checks(config: Config, now: datetime) -> list[Check]:
    found = await asyncio.gather(
        *(probe_node(n, config.auth, config.cluster.probe_timeout) for n in config.nodes)
    )
    view = ClusterView({o.name: o for o in found})
    checks = _nodes(view) + _replication(config, view)
    checks.append(await _summaries(config, view))
    checks += await asyncio.to_thread(_backups, config, now)
    checks.append(await asyncio.to_thread(_redis, config))
    checks.append(_api(config))
    checks += await asyncio.gather(
        *(_agent(config, n) for n in config.nodes if n.driver == "agent")
    )
    checks += await asyncio.to_thread(_daemon, config)
    return checks


def _nodes(view: ClusterView) -> list[Check]:
    checks = []
    for name, obs in view.nodes.items():
        if obs.reachable:
            role = "standby" if obs.in_recovery else "primary"
            checks.append(Check(f"node {name}", Level.OK, f"{role}, timeline {obs.timeline}"))
        else:
            checks.append(
                Check(
                    f"node {name}",
                    Level.FAIL,
                    f"unreachable: {obs.error}",
                    f"start {name}, or look at its log; `pghad status` shows what pghad sees",
                )
            )
    return checks


def _replication(config: Config, view: ClusterView) -> list[Check]:
    primaries = view.writable()
    if len(primaries) != 1:
        return [
            Check(
                "replication",
                Level.FAIL,
                f"{len(primaries)} writable nodes",
                "exactly one primary is needed: see `pghad status` and the events",
            )
        ]
    primary = primaries[0]
    standby = config.other(primary).name
    replica = view[primary].replica(standby)
    if replica is None or not replica.streaming:
        return [
            Check(
                "replication",
                Level.FAIL,
                f"{standby} is not streaming from {primary}",
                f"start {standby} (auto_rejoin does it when on) and check its log",
            )
        ]
    checks = [Check("replication", Level.OK, f"{standby} streams from {primary}")]
    if config.cluster.synchronous and not replica.synchronous:
        checks.append(
            Check(
                "synchronous",
                Level.WARN,
                f"{standby} is {replica.sync_state}",
                "the daemon makes it synchronous once it has caught up",
            )
        )
    elif config.cluster.synchronous:
        checks.append(Check("synchronous", Level.OK, f"{standby} is the synchronous standby"))
    lag = view[standby].replay_lag_s or 0.0
    limit = config.cluster.lag_alert_s
    level = Level.WARN if lag > limit else Level.OK
    checks.append(
        Check(
            "replay lag",
            level,
            f"{standby}: {lag:.1f} s (alert above {limit:g} s)",
            "look for long queries or I/O on the standby" if level else "",
        )
    )
    return checks


async def _summaries(config: Config, view: ClusterView) -> Check:
    primary = next(iter(view.writable()), None)
    if primary is None:
        return Check("wal summarizer", Level.WARN, "no primary to ask")
    try:
        async with await sqlops.connect(config.node(primary), config.auth) as conn:
            row = await (await conn.execute("SHOW summarize_wal")).fetchone()
    except psycopg.Error as exc:
        return Check("wal summarizer", Level.WARN, f"cannot ask {primary}: {exc}")
    if row and row[0] == "on":
        return Check("wal summarizer", Level.OK, "summarize_wal = on")
    return Check(
        "wal summarizer",
        Level.WARN,
        "summarize_wal is off: every backup will be full",
        "set summarize_wal = on in postgresql.conf and reload",
    )


def _backups(config: Config, now: datetime) -> list[Check]:
    directory = config.backup.dir
    problem = unwritable(directory)
    if problem is not None:
        return [
            Check(
                "backups directory",
                Level.FAIL,
                f"{directory}: {problem}",
                "create it, writable by the user pghad runs as",
            )
        ]
    records = Catalog(directory, None).records()
    fulls = [r for r in records if r.kind is BackupKind.FULL and r.status is BackupStatus.OK]
    free = shutil.disk_usage(directory).free
    need = fulls[-1].size_bytes or 0 if fulls else 0
    space = Check("backups directory", Level.OK, f"{directory}: {free / 1e9:.1f} GB free")
    if need and free < need:
        space = Check(
            "backups directory",
            Level.WARN,
            f"{directory}: {free / 1e9:.1f} GB free, the last full took {need / 1e9:.1f} GB",
            "free space or lower backup.keep_cycles",
        )
    if not records:
        return [space, Check("last backup", Level.WARN, "none yet", "`pghad backup` takes one now")]
    last = records[-1]
    age_h = (now - last.started).total_seconds() / 3600
    if last.status is BackupStatus.FAILED:
        return [
            space,
            Check(
                "last backup",
                Level.WARN,
                f"{last.id} failed: {last.error}",
                "fix the cause, then `pghad backup`",
            ),
        ]
    level = Level.WARN if age_h > 26 else Level.OK
    return [
        space,
        Check(
            "last backup",
            level,
            f"{last.id} {last.status.value}, {age_h:.0f} h ago",
            "is the daemon running with backup.schedule = true?" if level else "",
        ),
    ]


def redacted_url(url: str) -> str:
    """The URL without its password (redis://:secret@host -> redis://:***@host)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _redis(config: Config) -> Check:
    client = redis.Redis.from_url(config.redis.url, socket_timeout=2, socket_connect_timeout=2)
    try:
        catalog = Catalog.of(config)
        records = catalog.records()
        missing = [r.id for r in records if not client.exists(catalog.key(r))]
        others = catalog.other_clusters()
    except (RedisError, OSError) as exc:
        return Check(
            "redis",
            Level.WARN,
            f"{redacted_url(config.redis.url)}: {exc}",
            "pghad works without it; backups' metadata reaches it when it is back",
        )
    finally:
        client.close()
    if others:
        return Check(
            "redis",
            Level.FAIL,
            f"backups of another cluster ({', '.join(sorted(others))}) use the same key names "
            f"(prefix {config.redis.key_prefix!r}): pghad will not overwrite them",
            'give each cluster its own [redis] key_prefix, e.g. key_prefix = "'
            f'{config.cluster.name}:"',
        )
    if missing:
        return Check(
            "redis",
            Level.WARN,
            f"catalog incomplete: {len(missing)} records missing",
            "the daemon pushes them within 30 s while it runs",
        )
    return Check("redis", Level.OK, f"reachable, catalog complete ({len(records)} records)")


async def _agent(config: Config, node: NodeConfig) -> Check:
    assert isinstance(node, AgentNodeConfig)
    agent = config.agent
    client = AgentClient(
        node.agent_url, agent.token, agent.ca_file, "pghad-check", agent.plain_http
    )
    name = f"agent {node.name}"
    try:
        process = await client.call("GET", "/process", Process, timeout=3.0)
    except NodeError as exc:
        return Check(name, Level.FAIL, str(exc), f"start it on {node.name}'s host: `pghad agent`")
    return Check(name, Level.OK, f"{node.agent_url}: server {process.server}")


def _api(config: Config) -> Check:
    if not is_loopback(config.api.bind) and not config.api.token:
        return Check(
            "api token",
            Level.FAIL,
            f"api.bind = {config.api.bind} without a token",
            "set api.token (or PGHAD_API_TOKEN)",
        )
    return Check("api token", Level.OK, "set" if config.api.token else "loopback only, no token")


def _daemon(config: Config) -> list[Check]:
    client = ApiClient(f"http://{config.api.bind}:{config.api.port}", config.api.token, 3.0)
    try:
        status = client.call("GET", "/status")
    except ApiCallFailed as exc:
        return [Check("daemon", Level.FAIL, str(exc), "start it: `pghad run` or the systemd unit")]
    return [_daemon_state(status), _archive(status.get("archive"))]


def _daemon_state(status: dict[str, Any]) -> Check:
    if status.get("paused"):
        return Check("daemon", Level.WARN, "paused: no automatic failover", "`pghad resume`")
    if not status.get("standby_eligible"):
        return Check(
            "daemon",
            Level.WARN,
            f"{status['state']}: the standby is not eligible for automatic failover",
            "see `pghad status` and `pghad events`",
        )
    return Check("daemon", Level.OK, f"{status['state']}, the standby is eligible")


def _archive(archive: dict[str, Any] | None) -> Check:
    if archive is None:
        return Check("wal archive", Level.OK, "off: restores go back to a backup, not to a moment")
    if not archive.get("streaming"):
        return Check(
            "wal archive",
            Level.WARN,
            f"not streaming: {archive.get('last_error') or 'not started yet'}",
            "see `pghad events` (archive_stopped); the archive follows the primary by itself",
        )
    lag = archive.get("lag_s") or 0.0
    if lag > ARCHIVE_LAG_WARN_S:
        return Check("wal archive", Level.WARN, f"{lag:.0f} s behind the primary")
    return Check("wal archive", Level.OK, f"streaming from {archive['source']}, {lag:.1f} s behind")
