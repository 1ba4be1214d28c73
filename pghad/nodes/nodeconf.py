"""Node-specific settings kept in an include file that pghad rewrites before every start.

pg_rewind and pg_basebackup copy postgresql.conf and postgresql.auto.conf from the source node,
so a port or socket directory written there would be the other node's after a rewind.
"""

from __future__ import annotations

from pathlib import Path

from pghad.config.model import LocalNodeConfig, NodeConfig
from pghad.system import files

NODE_CONF = "pghad.node.conf"
INCLUDE_LINE = f"include_if_exists = '{NODE_CONF}'"
# Settings that must not come from postgresql.auto.conf, where pg_basebackup -R would put them.
NODE_OWNED = ("primary_conninfo", "primary_slot_name")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def render(node: NodeConfig, primary_conninfo: str | None) -> str:
    lines = [
        "# Written by pghad before every start; edits here are overwritten.",
        f"port = {node.port}",
        f"listen_addresses = {_quote(node.host)}",
        f"cluster_name = {_quote(node.name)}",
    ]
    if isinstance(node, LocalNodeConfig) and node.socket_dir is not None:
        lines.append(f"unix_socket_directories = {_quote(str(node.socket_dir))}")
    if primary_conninfo is not None:
        lines.append(f"primary_conninfo = {_quote(primary_conninfo)}")
    return "\n".join(lines) + "\n"


def ensure_include(postgresql_conf: Path, owner: tuple[int, int] | None = None) -> bool:
    """Append the include line when missing; the include must come last to win."""
    text = files.read_text(postgresql_conf) or ""
    if text.rstrip().endswith(INCLUDE_LINE):
        return False
    new = text.rstrip("\n") + f"\n{INCLUDE_LINE}\n"
    files.write_file(postgresql_conf, new.encode(), owner)
    return True


def strip_node_owned(auto_conf: Path, owner: tuple[int, int] | None = None) -> bool:
    """Drop node-owned settings from postgresql.auto.conf (it is read last and would win)."""
    text = files.read_text(auto_conf)
    if text is None:
        return False
    lines = text.splitlines(keepends=True)
    kept = [ln for ln in lines if ln.split("=", 1)[0].strip() not in NODE_OWNED]
    if kept == lines:
        return False
    files.write_file(auto_conf, "".join(kept).encode(), owner)
    return True
