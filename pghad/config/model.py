"""The config model (frozen, validated) and its loading from config.toml."""

from __future__ import annotations

import os
import tomllib
from datetime import time
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pghad.config.base import Model as _Model
from pghad.config.nodes import AgentNodeConfig, DockerNodeConfig, LocalNodeConfig, NodeConfig
from pghad.config.sections import (
    AgentConfig,
    ArchiveConfig,
    HooksConfig,
    LogConfig,
    RepositoryConfig,
    StateConfig,
)
from pghad.errors import ConfigError
from pghad.system.net import is_loopback

__all__ = [
    "AgentConfig",
    "AgentNodeConfig",
    "ArchiveConfig",
    "Config",
    "ConfigError",
    "DockerNodeConfig",
    "HooksConfig",
    "LocalNodeConfig",
    "LogConfig",
    "NodeConfig",
    "RepositoryConfig",
    "StateConfig",
    "load_config",
    "parse_config",
]

SECRET_ENV = {
    ("auth", "password"): "PGHAD_PG_PASSWORD",
    ("auth", "replication_password"): "PGHAD_REPLICATION_PASSWORD",
    ("api", "token"): "PGHAD_API_TOKEN",
    ("agent", "token"): "PGHAD_AGENT_TOKEN",
}


class ClusterConfig(_Model):
    name: str = "pghad"
    probe_interval: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    probe_timeout: Annotated[float, Field(ge=0.1, le=30)] = 1.0
    failover_threshold: Annotated[float, Field(ge=1, le=3600)] = 10.0
    synchronous: bool = True
    sync_relax_after: Annotated[float, Field(ge=0.5, le=3600)] = 3.0
    max_lag_on_failover: Annotated[int, Field(ge=0)] = 1_048_576
    # Replay lag (seconds) above which a standby is flagged and a warning event is written.
    lag_alert_s: Annotated[float, Field(gt=0, le=86400)] = 5.0
    auto_rejoin: bool = True
    preferred_primary: str | None = None

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Self:
        if self.probe_timeout > self.failover_threshold:
            raise ValueError("probe_timeout must not exceed failover_threshold")
        return self


class AuthConfig(_Model):
    password: str = ""
    replication_user: str = "replicator"
    replication_password: str = ""


class ApiConfig(_Model):
    bind: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8088
    token: str = ""
    # Host names clients may use besides the bound address and localhost (DNS rebinding guard).
    allowed_hosts: tuple[str, ...] = ()


class RedisConfig(_Model):
    url: str = "redis://127.0.0.1:6379/0"
    # Put before every key pghad writes, for clusters sharing a Redis ("prod:" gives
    # prod:backup:completo:<date> and prod:pghad:events). Empty: the manual's key names.
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]*$")] = ""


class BackupConfig(_Model):
    # false: no scheduled backups (manual `pghad backup` and POST /backups still work).
    schedule: bool = True
    dir: Path = Path("backups")
    time_of_day: time = time(2, 0)
    cycle_days: Annotated[int, Field(ge=1, le=366)] = 6
    keep_cycles: Annotated[int, Field(ge=1, le=100)] = 2
    source: Literal["standby", "primary"] = "standby"
    # none: plain directories; zstd: one base.tar.zst, compressed by pghad on all cores (about
    # as fast as none, about 5% of the size); gzip: PostgreSQL's tar.gz (about 5x slower).
    compression: Literal["none", "zstd", "gzip"] = "none"
    # 1 (fastest) to 19. On pgbench's data 1 is both faster and smaller than 3; on text-heavy
    # data 3 is about 15% smaller at twice the CPU.
    zstd_level: Annotated[int, Field(ge=1, le=19)] = 1
    logical_dump: bool = True


class Config(_Model):
    cluster: ClusterConfig = ClusterConfig()
    auth: AuthConfig = AuthConfig()
    nodes: Annotated[tuple[NodeConfig, ...], Field(min_length=2, max_length=2)]
    pg_bin: Path | None = None
    api: ApiConfig = ApiConfig()
    redis: RedisConfig = RedisConfig()
    backup: BackupConfig = BackupConfig()
    archive: ArchiveConfig = ArchiveConfig()
    repository: RepositoryConfig = RepositoryConfig()
    state: StateConfig = StateConfig()
    log: LogConfig = LogConfig()
    hooks: HooksConfig = HooksConfig()
    agent: AgentConfig = AgentConfig()

    @field_validator("nodes")
    @classmethod
    def _distinct_nodes(cls, nodes: tuple[NodeConfig, ...]) -> tuple[NodeConfig, ...]:
        names = [node.name for node in nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names {names}: each node needs its own name")
        addresses = [node.address for node in nodes]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"two nodes share the address {addresses[0]}")
        return nodes

    @model_validator(mode="after")
    def _self_fence_first(self) -> Self:
        if self.self_fence_after >= self.cluster.failover_threshold:
            raise ValueError(
                f"agent.self_fence_after ({self.self_fence_after:g} s) must be below "
                f"cluster.failover_threshold ({self.cluster.failover_threshold:g} s): an "
                "unreachable primary must have fenced itself before its standby is promoted"
            )
        return self

    @model_validator(mode="after")
    def _repository_complete(self) -> Self:
        repository = self.repository
        if not repository.is_s3:
            return self
        if not repository.bucket:
            raise ValueError('repository.bucket is required with repository.type = "s3"')
        if self.backup.compression != "zstd":
            raise ValueError(
                'repository.type = "s3" stores zstd backups: set backup.compression = "zstd"'
            )
        if repository.encryption_key_file and repository.encryption_key_env:
            raise ValueError("repository: set encryption_key_file or encryption_key_env, not both")
        return self

    @property
    def self_fence_after(self) -> float:
        configured = self.agent.self_fence_after
        return configured if configured is not None else 0.75 * self.cluster.failover_threshold

    @model_validator(mode="after")
    def _known_preferred(self) -> Self:
        names = [node.name for node in self.nodes]
        preferred = self.cluster.preferred_primary
        if preferred is not None and preferred not in names:
            raise ValueError(f"cluster.preferred_primary {preferred!r} is not one of {names}")
        return self

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def local_node(self, name: str) -> LocalNodeConfig:
        node = self.node(name)
        if not isinstance(node, LocalNodeConfig):
            raise ConfigError(f"node {name} uses the {node.driver} driver, not a local one")
        return node

    def other(self, name: str) -> NodeConfig:
        return next(node for node in self.nodes if node.name != name)

    @property
    def preferred_primary(self) -> str:
        return self.cluster.preferred_primary or self.nodes[0].name


def _location(loc: tuple[int | str, ...], raw: dict[str, object]) -> str:
    """Turn a pydantic error location into a TOML key, naming nodes by name when possible."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(part, int) and parts and parts[-1] == "nodes":
            nodes = raw.get("nodes")
            name = None
            if isinstance(nodes, list) and part < len(nodes) and isinstance(nodes[part], dict):
                name = nodes[part].get("name")
            parts[-1] = f"nodes[{part}]" + (f" ({name})" if name else "")
        elif isinstance(part, str) and part in ("local", "docker", "agent") and index > 0:
            continue  # the driver's tag pydantic puts in the location: not a key in the file
        elif isinstance(part, str) and not (index == len(loc) - 1 and part.startswith("_")):
            parts.append(part)
    return ".".join(parts) or "config"


def _apply_secret_env(raw: dict[str, object]) -> None:
    for (section, key), env_name in SECRET_ENV.items():
        value = os.environ.get(env_name)
        if value:
            table = raw.setdefault(section, {})
            if isinstance(table, dict):
                table[key] = value


def _resolve_paths(raw: dict[str, object], base: Path) -> None:
    """Relative paths in the file are relative to the file's directory, not the caller's cwd."""
    for section, key in (
        ("backup", "dir"),
        ("state", "dir"),
        ("state", "failback_trigger"),
        ("archive", "dir"),
        ("agent", "tls_cert"),
        ("agent", "tls_key"),
        ("agent", "ca_file"),
        ("repository", "credentials_file"),
        ("repository", "ca_file"),
        ("repository", "encryption_key_file"),
    ):
        table = raw.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            table[key] = str(base / table[key])
    if isinstance(raw.get("pg_bin"), str):
        raw["pg_bin"] = str(base / str(raw["pg_bin"]))
    nodes = raw.get("nodes")
    for node in nodes if isinstance(nodes, list) else []:
        for key in ("data_dir", "socket_dir"):
            if isinstance(node, dict) and isinstance(node.get(key), str):
                node[key] = str(base / node[key])


def parse_config(text: str, source: str = "config.toml", base: Path | None = None) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from exc
    _apply_secret_env(raw)
    if base is not None:
        _resolve_paths(raw, base)
    return validate_config(raw, source)


def load_config(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such config file (pass --config FILE; `pghad lab up` writes "
            "lab/config.toml for a local lab)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid UTF-8 (byte {exc.start}): save the file as UTF-8"
        ) from exc
    return parse_config(text, str(path), base=path.resolve().parent)


def validate_config(raw: dict[str, object], source: str) -> Config:
    """The one validation of a config, at start and on reload; errors name the key."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = _location(error["loc"], raw)
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (check its spelling against config.toml in the repository)"
            elif error["type"] == "missing":
                message = "required key is missing"
            problems.append(f"{source}: {key}: {message}")
        raise ConfigError("\n".join(problems)) from exc


def require_api_token(config: Config, source: str) -> None:
    """The API off loopback needs a token: at start and on every reload."""
    if not is_loopback(config.api.bind) and not config.api.token:
        raise ConfigError(
            f"{source}: api.bind = {config.api.bind!r} is not a loopback address and "
            "api.token is empty: set a token (or PGHAD_API_TOKEN) before exposing the API"
        )
