"""The files a lab is made of: its PostgreSQL settings, pg_hba.conf, and pghad's config."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import cast

import tomlkit

from pghad.nodes import nodeconf
from pghad.system import files

POSTGRESQL_CONF = f"""
# pghad lab settings
wal_level = replica
summarize_wal = on
wal_log_hints = on
hot_standby = on
hot_standby_feedback = on
max_wal_senders = 8
wal_keep_size = '512MB'
max_slot_wal_keep_size = '4GB'
wal_sender_timeout = '10s'
wal_receiver_timeout = '10s'
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '100ms'
max_connections = 50
{nodeconf.INCLUDE_LINE}
"""

PG_HBA = """# pghad lab: loopback only, passwords for everything over TCP
local   all           all                          trust
host    all           all          127.0.0.1/32    scram-sha-256
host    replication   {repl_user}  127.0.0.1/32    scram-sha-256
"""

CONFIG_TEMPLATE = """# pghad lab configuration, written by `pghad lab up`.
# See config.toml in the repository for every setting and what it means.

pg_bin = ""

[cluster]
name = "pghad-lab"
probe_interval = 1.0
probe_timeout = 1.0
failover_threshold = 10.0
synchronous = true
sync_relax_after = 3.0
max_lag_on_failover = 1048576
auto_rejoin = true
preferred_primary = "node1"

[auth]
password = ""
replication_user = "replicator"
replication_password = ""

[[nodes]]
name = "node1"
host = "127.0.0.1"
port = 15432
user = "postgres"
dbname = "postgres"
data_dir = "node1/data"
socket_dir = "node1/run"
driver = "local"

[[nodes]]
name = "node2"
host = "127.0.0.1"
port = 15433
user = "postgres"
dbname = "postgres"
data_dir = "node2/data"
socket_dir = "node2/run"
driver = "local"

[api]
bind = "127.0.0.1"
port = 8088
token = ""

[redis]
url = "redis://127.0.0.1:6379/0"

[backup]
schedule = true
dir = "backups"
time_of_day = 02:00:00
cycle_days = 6
keep_cycles = 2
source = "standby"
compression = "none"
logical_dump = true

[archive]
enabled = true
compression = "zstd"
synchronous = false

[state]
dir = "state"

[log]
format = "auto"
level = "info"
"""


def write_config(lab_dir: Path, port1: int, port2: int, bin_dir: Path, api_port: int) -> Path:
    """The lab's config.toml with fresh passwords and token (mode 0600 from the start)."""
    doc = tomlkit.parse(CONFIG_TEMPLATE)
    doc["pg_bin"] = str(bin_dir)
    auth = cast(dict[str, object], doc["auth"])
    auth["password"] = secrets.token_urlsafe(18)
    auth["replication_password"] = secrets.token_urlsafe(18)
    nodes = cast(list[dict[str, object]], doc["nodes"])
    nodes[0]["port"], nodes[1]["port"] = port1, port2
    api = cast(dict[str, object], doc["api"])
    api["port"], api["token"] = api_port, secrets.token_urlsafe(24)
    path = lab_dir / "config.toml"
    with files.create_private(path) as handle:  # passwords and the token: 0600 from the start
        handle.write(tomlkit.dumps(doc).encode())
    return path
