"""Probe a node over SQL with hard timeouts: a hung server counts as down, like a dead one."""

from __future__ import annotations

import asyncio
import time

import psycopg
from psycopg.rows import dict_row

from pghad.config.model import AuthConfig, NodeConfig
from pghad.decide.observation import NodeObservation, ReplicaInfo, parse_lsn
from pghad.errors import NodeError
from pghad.nodes.conninfo import admin_conninfo
from pghad.nodes.resolver import Resolver

NODE_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('synchronous_standby_names') AS sync_names,
       current_setting('default_transaction_read_only') = 'on' AS read_only,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS primary_tli,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
       END AS replay_lag_s,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_tli,
       r.received_tli, r.status AS receiver_status,
       extract(epoch FROM now() - r.last_msg_receipt_time)::float8 AS receiver_msg_age_s
FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true
"""

REPLICAS_QUERY = """
SELECT application_name AS name, state, sync_state, flush_lsn::text, replay_lsn::text,
       extract(epoch FROM replay_lag)::float8 AS replay_lag_s
FROM pg_stat_replication
"""


async def _query(
    node: NodeConfig, auth: AuthConfig, timeout: float, resolver: Resolver | None
) -> NodeObservation:
    started = time.monotonic()
    hostaddr = await resolver.address(timeout) if resolver is not None else None
    conninfo = admin_conninfo(node, auth, connect_timeout=max(1, round(timeout)), hostaddr=hostaddr)
    options = f"-c statement_timeout={int(timeout * 1000)}"
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, options=options, row_factory=dict_row
    ) as conn:
        row = await (await conn.execute(NODE_QUERY)).fetchone()
        assert row is not None
        replicas: list[dict[str, object]] = []
        if not row["in_recovery"]:
            replicas = await (await conn.execute(REPLICAS_QUERY)).fetchall()
    timeline = row["primary_tli"] or row["received_tli"] or row["checkpoint_tli"]
    return NodeObservation(
        name=node.name,
        reachable=True,
        in_recovery=row["in_recovery"],
        timeline=timeline,
        current_lsn=parse_lsn(row["current_lsn"]),
        receive_lsn=parse_lsn(row["receive_lsn"]),
        replay_lsn=parse_lsn(row["replay_lsn"]),
        replay_lag_s=row["replay_lag_s"],
        sync_standby_names=row["sync_names"],
        read_only=row["read_only"],
        replicas=tuple(
            ReplicaInfo(
                name=str(r["name"]),
                state=str(r["state"]),
                sync_state=str(r["sync_state"]),
                flush_lsn=parse_lsn(r["flush_lsn"]),  # type: ignore[arg-type]
                replay_lsn=parse_lsn(r["replay_lsn"]),  # type: ignore[arg-type]
                replay_lag_s=r["replay_lag_s"],  # type: ignore[arg-type]
            )
            for r in replicas
        ),
        receiver_status=row["receiver_status"],
        receiver_msg_age_s=row["receiver_msg_age_s"],
        probe_duration_s=time.monotonic() - started,
    )


async def probe_node(
    node: NodeConfig, auth: AuthConfig, timeout: float, resolver: Resolver | None = None
) -> NodeObservation:
    """Observe one node; any failure or a reply slower than `timeout` means unreachable.

    The deadline covers the name lookup too (done by `resolver`, in the node's own thread).
    """
    started = time.monotonic()
    try:
        return await asyncio.wait_for(_query(node, auth, timeout, resolver), timeout)
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except NodeError as exc:
        error = str(exc)
    except psycopg.Error as exc:
        error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    except OSError as exc:
        error = str(exc)
    return NodeObservation(
        name=node.name,
        reachable=False,
        error=error,
        probe_duration_s=time.monotonic() - started,
    )
