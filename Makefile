# The two commands a person needs: `make run` and `make test`. Everything they need is
# installed here, into .venv, from the package registries.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint serve cluster bench chaos clean

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded default server, with a generated game log as its source;
# windows open when a display exists. Pass more with ARGS, e.g. make run ARGS=/var/log/syslog
run: $(STAMP)
	$(BIN)/log-monitor run --demo $(ARGS)

serve: $(STAMP)
	$(BIN)/log-monitor-server serve

# PostgreSQL, Redis and three server nodes behind HAProxy, on loopback ports in temporary
# directories; prints the URL to give `log-monitor run --server`; Ctrl-C stops it all.
cluster: $(STAMP)
	$(BIN)/python -m server.local_cluster --nodes 3

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Every benchmark, one after another; writes BENCHMARKS.md. FULL=1 for the long run.
# Needs Node.js (bench/node) and Debian's chromium for the peers; missing peers are noted.
bench: $(STAMP)
	cd bench/node && npm ci --no-audit --no-fund --silent
	command -v chromium >/dev/null || (apt-get install -y -qq --no-install-recommends chromium || true)
	$(BIN)/python -m bench.run_all $(if $(FULL),--full,)

# The fault campaign against the real server and client; prints one table. Quick by
# default (it also runs inside `make test`); FULL=1 runs for 10 minutes.
chaos: $(STAMP)
	$(BIN)/python -m tests.support.chaos_campaign $(if $(FULL),--full,--quick)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
