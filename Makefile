# Everything a newcomer needs: `make demo` (lab + daemon) and `make test` (the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
LAB ?= lab

.PHONY: install test-deps demo test check unit integration compose bench lab-down lab-destroy clean

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

lab-down: install
	$(VENV)/bin/pghad lab down --dir $(LAB)

lab-destroy: install
	$(VENV)/bin/pghad lab destroy --dir $(LAB)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
