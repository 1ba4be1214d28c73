#!/usr/bin/env bash
# postgres_slave's entrypoint: on first start, clone postgres_master with pg_basebackup and
# start as its standby; afterwards start as whatever the data directory says (pghad manages it).
set -euo pipefail

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "postgres_slave: cloning $MASTER_HOST with pg_basebackup"
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  until gosu postgres pg_isready -h "$MASTER_HOST" -p 5432 -q; do sleep 1; done
  PGPASSWORD="$REPLICATION_PASSWORD" gosu postgres pg_basebackup -h "$MASTER_HOST" -p 5432 \
    -U "$REPLICATION_USER" -D "$PGDATA" -c fast -X stream
  gosu postgres touch "$PGDATA/standby.signal"
  conninfo="host=$MASTER_HOST port=5432 user=$REPLICATION_USER password=$REPLICATION_PASSWORD application_name=postgres_slave"
  printf "port = 5432\nlisten_addresses = '*'\ncluster_name = 'postgres_slave'\nprimary_conninfo = '%s'\n" \
    "$conninfo" | gosu postgres tee "$PGDATA/pghad.node.conf" >/dev/null
  chmod 600 "$PGDATA/pghad.node.conf"
fi
exec docker-entrypoint.sh postgres
