"""The bodies of the agent's HTTP API, shared by its server (pghad.agent.app) and its client
(pghad.nodes.agent): what one side sends is what the other validates."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from pghad.decide.observation import ServerState
from pghad.nodes.base import Role

LEASE_TTL_S = 10.0
# Bounded: a lease asked for a day would keep every other daemon out for a day.
MAX_LEASE_TTL_S = 60.0


class Heartbeat(BaseModel):
    """POST /heartbeat: the daemon renews its lease and gives the agent its fencing timing."""

    holder: str
    host: str
    ttl: Annotated[float, Field(gt=0, le=MAX_LEASE_TTL_S)] = LEASE_TTL_S
    self_fence_after: Annotated[float, Field(gt=0, le=3600)] | None = None


class PeerView(BaseModel):
    """The other node as the agent's host sees it."""

    name: str
    reachable: bool
    down_for_s: float | None = None
    error: str | None = None


class HeartbeatAnswer(BaseModel):
    node: str
    server: ServerState
    writable: bool
    # Its own SQL check answers in time as a writable primary: alive, from its own host.
    serving: bool = False
    self_fenced: str | None = None
    # Fenced as a precaution while cut off (the daemon may start it again), not superseded.
    fenced_isolated: bool = False
    self_fence_after: float | None = None
    peer: PeerView | None = None


class Health(BaseModel):
    """GET /health, open: whether this host reaches the other node's server."""

    status: Literal["ok"] = "ok"
    node: str
    peer_reachable: bool


class PrimaryCheck(BaseModel):
    """GET /primary (200 or 503, for load balancers)."""

    node: str
    primary: bool


class ReplicaCheck(BaseModel):
    """GET /replica (200 or 503, for load balancers)."""

    node: str
    replica: bool


class Process(BaseModel):
    running: bool
    server: ServerState


class Start(BaseModel):
    role: Role
    primary: str | None = None


class Stop(BaseModel):
    mode: str = "fast"


class Source(BaseModel):
    """POST /rewind and /clone: the node to copy from."""

    source: str


class Fence(BaseModel):
    """POST /fence takes no parameters."""


class Done(BaseModel):
    status: Literal["success"] = "success"


class Fenced(Done):
    detail: str


class CheckpointLsn(BaseModel):
    lsn: str


class Control(BaseModel):
    """A stopped server's pg_control: how it stopped, its timeline and checkpoint."""

    state: str
    timeline: int | None
    checkpoint_lsn: int | None = None


class AgentErrorBody(BaseModel):
    """Every refusal and failure; a lease refusal names the daemon holding the lease."""

    status: Literal["error"] = "error"
    message: str
    holder: str | None = None
    host: str | None = None
