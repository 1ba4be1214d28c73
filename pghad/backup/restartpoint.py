"""Before an incremental backup from a standby: give the standby a fresh restartpoint.

A standby's backup starts at its last restartpoint. If there was little activity since the parent
backup, that restartpoint is older than where the parent ended, and PostgreSQL refuses the
incremental ("manifest requires WAL ... but this backup starts at ..."). A checkpoint and a WAL
switch on the primary, replayed by the standby, then a CHECKPOINT on the standby (a restartpoint)
move the start past it.
"""

from __future__ import annotations

import asyncio

import psycopg

from pghad.cluster import sqlops
from pghad.config import AuthConfig, NodeConfig

REPLAY_WAIT_S = 10.0
POLL_S = 0.05


async def advance_restartpoint(primary: NodeConfig, standby: NodeConfig, auth: AuthConfig) -> None:
    """Best effort: any failure leaves it to pg_basebackup to say what is wrong."""
    try:
        async with await sqlops.connect(primary, auth) as conn:
            await conn.execute("CHECKPOINT")
            await conn.execute("SELECT pg_switch_wal()")
            row = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
        target = row[0] if row else None
        async with await sqlops.connect(standby, auth) as conn:
            deadline = asyncio.get_running_loop().time() + REPLAY_WAIT_S
            while asyncio.get_running_loop().time() < deadline:
                replayed = await (
                    await conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))
                ).fetchone()
                if replayed and replayed[0]:
                    break
                await asyncio.sleep(POLL_S)
            await conn.execute("CHECKPOINT")
    except psycopg.Error:
        return
