"""Config tables of the archive, the agents, hooks, state and logging."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from pghad.config.base import Model as _Model


class ArchiveConfig(_Model):
    # Stream every WAL record into an archive on this host, for point-in-time restore.
    enabled: bool = False
    dir: Path | None = None  # default: <backup.dir>/wal
    compression: Literal["zstd", "gzip", "none"] = "zstd"
    # Count the archive as a synchronous standby too: a commit is acknowledged only when it is
    # archived (and, while the standby streams, on the standby as well).
    synchronous: bool = False
    slot: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,63}$")] = "pghad_archive"

    def path(self, backup_dir: Path) -> Path:
        return self.dir or backup_dir / "wal"


class AgentConfig(_Model):
    # `pghad agent` on a database host, and how the daemon reaches agents (driver = "agent").
    node: str | None = None  # this host's [[nodes]] name (or `pghad agent --node NAME`)
    bind: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8089
    token: str = ""
    tls_cert: Path | None = None  # the agent serves HTTPS with these two
    tls_key: Path | None = None
    ca_file: Path | None = None  # the daemon verifies agents' certificates with this
    # true: agents off loopback may be reached by plain http, the token in clear (a private
    # network only, such as the lab's namespaces); false: such an agent_url is refused.
    plain_http: bool = False
    # A primary's agent that has heard neither the daemon nor its standby for this long stops
    # its server (below cluster.failover_threshold, so it is fenced before any promotion).
    self_fence_after: Annotated[float, Field(gt=0, le=3600)] | None = None
    peer_interval: Annotated[float, Field(ge=0.05, le=10)] = 0.2  # its check of the other node
    # Where the agent keeps when it last heard the daemon and its peer, so that a restarted
    # agent fences on the silence that began before it started (a runtime directory: a reboot
    # empties it). Unwritable: it counts from its own start, and says so.
    run_dir: Path = Path("/run/pghad-agent")


class HooksConfig(_Model):
    # A program run (no shell) when a node changes role: on promote, demote, fence and rejoin,
    # with PGHAD_EVENT, PGHAD_NODE, PGHAD_ROLE and PGHAD_CLUSTER in its environment.
    command: tuple[str, ...] = ()
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0


class StateConfig(_Model):
    dir: Path = Path("state")
    # A file whose appearance starts a failback (default: failback.trigger in the state dir).
    failback_trigger: Path | None = None

    @property
    def trigger_path(self) -> Path:
        return self.failback_trigger or self.dir / "failback.trigger"


class LogConfig(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class RepositoryConfig(_Model):
    # Where backups and the WAL archive live: "local" (backup.dir only, the default) or "s3"
    # (an S3-compatible bucket as well; backup.dir then spools what is on its way up).
    type: Literal["local", "s3"] = "local"
    endpoint: str | None = None  # http(s)://host:port; none: AWS's own for the region
    region: str = "us-east-1"
    bucket: str = ""
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]*$")] = ""
    # An AWS-style credentials file ([default] aws_access_key_id, aws_secret_access_key);
    # without it, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment.
    credentials_file: Path | None = None
    ca_file: Path | None = None  # verify the endpoint's TLS certificate with this CA
    # Keep each backup and archived segment in backup.dir too (fast restores); false: the
    # local copy is removed once the bucket has it.
    local_copy: bool = True
    # Client-side encryption (AES-256-GCM by chunks): a file holding a 256-bit key, or the name
    # of an environment variable holding it (hex or base64). Neither: objects are not encrypted.
    encryption_key_file: Path | None = None
    encryption_key_env: str | None = None
    # WAL waiting for the bucket past 80% of this many MB is an alert (nothing is dropped).
    spool_alert_mb: Annotated[int, Field(ge=1)] = 4096
    part_size_mb: Annotated[int, Field(ge=5, le=512)] = 16
    parallel: Annotated[int, Field(ge=1, le=64)] = 4
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0

    @property
    def is_s3(self) -> bool:
        return self.type == "s3"
