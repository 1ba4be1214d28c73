#!/usr/bin/env bash
# Runs once, when the official image initialises postgres_master's data directory.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v repl_user="$REPLICATION_USER" -v repl_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_password';
SQL

cat /etc/pghad/postgresql.pghad.conf >> "$PGDATA/postgresql.conf"
cat /etc/pghad/pg_hba.pghad.conf >> "$PGDATA/pg_hba.conf"
