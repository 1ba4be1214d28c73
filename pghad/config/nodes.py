"""[[nodes]] entries: the fields every node has, and each driver's own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag

from pghad.config.base import Model


class _NodeBase(Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    user: str = "postgres"
    dbname: str = "postgres"
    data_dir: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class LocalNodeConfig(_NodeBase):
    """A server on pghad's own host: pg_ctl, pg_rewind and pg_basebackup run here."""

    driver: Literal["local"] = "local"
    socket_dir: Path | None = None


class DockerNodeConfig(_NodeBase):
    """A server that is a container's main process, reached through the Docker engine."""

    driver: Literal["docker"]
    container: str | None = None  # default: the node's name


def _driver_of(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("driver", "local"))
    return str(getattr(value, "driver", "local"))


class AgentNodeConfig(_NodeBase):
    """A server on another host, whose process work `pghad agent` does there.

    `host`/`port` is where pghad and the other node connect; `listen` is what the server binds
    (default: host). `data_dir`, `socket_dir` and `pg_bin` are the agent's host's paths.
    """

    driver: Literal["agent"]
    agent_url: Annotated[str, Field(pattern=r"^https?://")]
    listen: str | None = None
    socket_dir: Path | None = None

    @property
    def listen_address(self) -> str:
        return self.listen or self.host


# Each driver's node has only its own fields: `container` on a local node is an unknown key.
NodeConfig = Annotated[
    Annotated[LocalNodeConfig, Tag("local")]
    | Annotated[DockerNodeConfig, Tag("docker")]
    | Annotated[AgentNodeConfig, Tag("agent")],
    Discriminator(_driver_of),
]
