"""The SQL side of actions: promotion, synchronous settings, read-only fencing."""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from pghad.config.model import AuthConfig, NodeConfig
from pghad.decide import sync_names
from pghad.nodes.conninfo import admin_conninfo

PROMOTE_POLL_S = 0.01

# How long a promotion is waited for; it may still take effect later (see act/executor.py).
PROMOTE_WAIT_S = 30.0


async def connect(
    node: NodeConfig, auth: AuthConfig, timeout: float = 5.0
) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(
        admin_conninfo(node, auth, connect_timeout=max(1, round(timeout))), autocommit=True
    )


async def set_synchronous_standby(
    node: NodeConfig,
    auth: AuthConfig,
    standby: str | None,
    archive: bool = False,
    timeout: float = 5.0,
) -> None:
    value = sync_names.render(standby, archive)
    async with await connect(node, auth, timeout) as conn:
        await conn.execute(
            sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(value))
        )
        await conn.execute("SELECT pg_reload_conf()")


async def promote(
    node: NodeConfig, auth: AuthConfig, archive: bool = False, wait_s: float = PROMOTE_WAIT_S
) -> bool:
    """Set the new primary's synchronous members, then promote and wait. `archive`: its first
    commit already waits for the synchronous WAL archive, never acknowledged by it alone."""
    async with await connect(node, auth, 5.0) as conn:
        # The old primary's names were copied by pg_rewind / pg_basebackup: left in place, the
        # new primary's first commits would wait for a standby that is not there (itself).
        await conn.execute(
            sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(
                sql.Literal(sync_names.render(None, archive))
            )
        )
        # After a promote request the startup process may still sleep one retry interval
        # (5 s by default) waiting for the dead primary's WAL before it ends recovery.
        await conn.execute("ALTER SYSTEM SET wal_retrieve_retry_interval = '100ms'")
        await conn.execute("SELECT pg_reload_conf()")
        # pg_promote(true) polls every 100 ms; polling ourselves ends the wait sooner.
        await conn.execute("SELECT pg_promote(false)")
        deadline = asyncio.get_running_loop().time() + wait_s
        while asyncio.get_running_loop().time() < deadline:
            row = await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone()
            if row is not None and not row[0]:
                return True
            await asyncio.sleep(PROMOTE_POLL_S)
    return False


async def make_read_only(node: NodeConfig, auth: AuthConfig, timeout: float = 5.0) -> None:
    """Fence over SQL when the node driver cannot stop the server: refuse writes, drop sessions."""
    async with await connect(node, auth, timeout) as conn:
        await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await conn.execute("SELECT pg_reload_conf()")
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )


async def checkpoint(node: NodeConfig, auth: AuthConfig, timeout: float = 60.0) -> None:
    async with await connect(node, auth, 5.0) as conn:
        await asyncio.wait_for(conn.execute("CHECKPOINT"), timeout)
