# Everything a newcomer needs: `make demo` (lab + daemon) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
LAB ?= lab

.PHONY: install test-deps bench-deps demo test check unit integration compose bench bench-s3 lab-down lab-destroy clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The test harness starts its own redis-server, drops packets with iptables, checks alert rules
# with promtool and sends a writer through haproxy; install them from Debian's packages if missing.
test-deps:
	@command -v redis-server >/dev/null 2>&1 && command -v iptables >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 || { \
	  echo "installing redis-server, iptables, prometheus and haproxy (Debian packages)"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server iptables prometheus haproxy >/dev/null) || { \
	    echo "could not install them: apt-get install redis-server iptables prometheus haproxy"; exit 1; }; }

demo: install
	$(VENV)/bin/pghad lab up --dir $(LAB)
	@echo
	@echo "Starting the daemon in the foreground (Ctrl-C stops it; the lab keeps running)."
	@echo "In another terminal, kill the primary and watch the standby take over:"
	@echo "  kill -9 \$$(head -1 $(LAB)/node1/data/postmaster.pid)"
	@echo "  $(VENV)/bin/pghad lab status --dir $(LAB)"
	@echo
	$(VENV)/bin/pghad run --config $(LAB)/config.toml

check: install
	$(VENV)/bin/ruff check pghad tests bench
	$(VENV)/bin/ruff format --check pghad tests bench
	$(VENV)/bin/mypy pghad bench tests

test: install test-deps check
	$(VENV)/bin/pytest

unit: install
	$(VENV)/bin/pytest -m "not integration and not compose"

integration: install test-deps
	$(VENV)/bin/pytest -m integration

# The docker-compose.yml stack on a real engine (prepares the engine and images if missing).
compose: install
	$(VENV)/bin/pytest -m compose

bench: install
	$(PY) bench/failover.py --runs 10 --threshold 2

# `bench/backup.py --repository s3` puts Debian's pgBackRest beside pghad; pgBackRest 2.45 does
# not support PostgreSQL 18, so it runs on Debian's PostgreSQL 15 (binaries only: no cluster is
# created for it). The tests need neither (their S3 server, SeaweedFS, comes with the dev extras).
bench-deps:
	@command -v pgbackrest >/dev/null 2>&1 && test -x /usr/lib/postgresql/15/bin/postgres || { \
	  echo "installing pgbackrest and postgresql-15 (Debian packages)"; \
	  mkdir -p /etc/postgresql-common; \
	  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf || \
	    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf; \
	  (apt-get update -qq && apt-get install -y -qq pgbackrest postgresql-15 >/dev/null) || { \
	    echo "could not install them: apt-get install pgbackrest postgresql-15"; exit 1; }; }

bench-s3: install bench-deps
	$(PY) bench/backup.py --repository s3

lab-down: install
	$(VENV)/bin/pghad lab down --dir $(LAB)

lab-destroy: install
	$(VENV)/bin/pghad lab destroy --dir $(LAB)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
