"""Before an incremental backup from a standby: give the standby a fresh restartpoint.

A standby's backup starts at its last restartpoint. If there was little activity since the parent
backup, that restartpoint is older than where the parent ended, and PostgreSQL refuses the
incremental ("manifest requires WAL ... but this backup starts at ..."). A checkpoint and a WAL
switch on the primary, replayed by the standby, then a CHECKPOINT on the standby (a restartpoint)
move the start past it.

Then the standby's WAL summarizer must have summarized up to that start before the backup can
begin. On a quiet standby it sleeps for seconds at a time (up to 30 s here) and replay does not
wake it; pg_log_backend_memory_contexts() signals it (it logs four lines of memory use) and it
catches up at once: an incremental from a quiet standby took 12-14 s without this, under 1 s with.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from pghad.config.model import AuthConfig, NodeConfig
from pghad.nodes import sql as sqlops

REPLAY_WAIT_S = 10.0
SUMMARY_WAIT_S = 5.0
POLL_S = 0.05
SUMMARIZED_PAST_REDO = """
SELECT CASE WHEN s.summarizer_pid IS NULL THEN NULL ELSE s.summarized_lsn >= c.redo_lsn END
FROM pg_get_wal_summarizer_state() AS s, pg_control_checkpoint() AS c
"""


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
            await _wake_summarizer(conn)
    except psycopg.Error:
        return


async def _wake_summarizer(conn: psycopg.AsyncConnection[Any]) -> None:
    deadline = asyncio.get_running_loop().time() + SUMMARY_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        row = await (await conn.execute(SUMMARIZED_PAST_REDO)).fetchone()
        if row is None or row[0] is None or row[0]:
            return  # no summarizer (summarize_wal off: pg_basebackup says so), or caught up
        await conn.execute(
            "SELECT pg_log_backend_memory_contexts(summarizer_pid) "
            "FROM pg_get_wal_summarizer_state() WHERE summarizer_pid IS NOT NULL"
        )
        await asyncio.sleep(POLL_S * 2)
