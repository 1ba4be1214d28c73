"""libpq connection strings for the daemon (admin) and for replication."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pghad.config.model import AuthConfig, NodeConfig


def admin_conninfo(
    node: NodeConfig,
    auth: AuthConfig,
    connect_timeout: int = 3,
    with_password: bool = True,
    hostaddr: str | None = None,
) -> str:
    """`hostaddr`: an address already looked up for node.host (libpq then does no lookup)."""
    return make_conninfo(
        host=node.host,
        hostaddr=hostaddr,
        port=node.port,
        user=node.user,
        dbname=node.dbname,
        password=(auth.password or None) if with_password else None,
        connect_timeout=connect_timeout,
        application_name="pghad",
    )


def replication_conninfo(
    primary: NodeConfig, auth: AuthConfig, application_name: str, with_password: bool = True
) -> str:
    return make_conninfo(
        host=primary.host,
        port=primary.port,
        user=auth.replication_user,
        password=(auth.replication_password or None) if with_password else None,
        application_name=application_name,
    )


def clone_application_name(node: str) -> str:
    """pg_basebackup's WAL stream must not pass for the standby `node` in pg_stat_replication:
    pghad would call it streaming, or even count it as the synchronous standby.
    """
    return f"pghad_clone_{node}"


def redacted(conninfo: str) -> str:
    """The connection string with its password hidden, for messages and logs."""
    params = conninfo_to_dict(conninfo)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)
