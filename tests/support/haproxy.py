"""HAProxy sending clients to the node whose agent answers GET /primary with 200 (README)."""

from __future__ import annotations


def primary_listener(port: int, default_server: str, servers: list[str], *globals_: str) -> str:
    """haproxy.cfg: one TCP listener on 127.0.0.1:`port` checking each server's agent."""
    global_lines = "".join(f"    {line}\n" for line in globals_ or ("maxconn 100",))
    server_lines = "".join(f"    {line}\n" for line in servers)
    return (
        f"global\n{global_lines}"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n"
        "    timeout server 30s\n"
        f"listen primary\n    bind 127.0.0.1:{port}\n    option httpchk GET /primary\n"
        f"    http-check expect status 200\n    default-server {default_server}\n{server_lines}"
    )
