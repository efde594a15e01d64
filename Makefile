# Chargeward: `make demo` runs the end-to-end demo, `make test` runs every check.
# Both create the virtual environment and install what they need on a fresh machine,
# including SoftHSM2 (the PKCS#11 token behind HSM-key tests and demos) via `system-deps`.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SOFTHSM_MODULE := /usr/lib/softhsm/libsofthsm2.so
SUDO   := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# pytest-xdist workers: every test uses its own ports, directories, tokens and databases.
# Three workers on two cores: most tests wait on sockets, reboots and argon2 in subprocesses,
# so a third worker fills the idle time; work stealing keeps the long tests from queueing
# behind one worker.
TEST_WORKERS ?= 3
PYTEST_XDIST := -n $(TEST_WORKERS) --dist worksteal

.PHONY: demo demo-keep test test-slow lint typecheck unit setup system-deps clean security-report docs interop-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# SoftHSM2 and OpenSC (pkcs11-tool), nginx (the download benchmark's baseline, whose smoke
# test runs in `make test`) and Chromium (the dashboard's browser tests drive Debian's
# /usr/bin/chromium; Playwright never downloads one) and Node.js with npm (the interop suite's
# peer, tests/interop) from apt, only when missing.
system-deps:
	@if [ ! -e $(SOFTHSM_MODULE) ] || ! command -v softhsm2-util >/dev/null 2>&1 || \
		! { command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 || \
		[ ! -x /usr/bin/chromium ] || ! command -v npm >/dev/null 2>&1; then \
		command -v apt-get >/dev/null 2>&1 || { \
			echo "system-deps: install softhsm2, opensc, nginx, chromium and npm with your package manager" >&2; \
			exit 1; }; \
		echo "system-deps: installing softhsm2, opensc, nginx-light, chromium and npm (apt-get)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 opensc nginx-light chromium; \
		command -v npm >/dev/null 2>&1 || \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; \
	fi

demo: system-deps $(STAMP)
	$(PY) -m chargeward demo --workdir demo-data

demo-keep: system-deps $(STAMP)
	$(PY) -m chargeward demo --workdir demo-data --keep-running

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: system-deps $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

# `make test`: every test but the slow suites (about 7 minutes of pytest on 2 cores; no test in
# it over 30 s there); `make test-slow`: the slow ones (whole-fleet simulations, SIGKILL
# power-loss runs, the demo, Chromium, the fuzzing campaigns, and the end-to-end tests that
# take over 30 s beside the others; about 13 minutes).  CI (.ci/run) runs both.
test: system-deps lint typecheck
	$(VENV)/bin/pytest -q $(PYTEST_XDIST) -m "not slow" --junitxml=reports/pytest.xml

test-slow: system-deps $(STAMP) interop-deps
	$(VENV)/bin/pytest -q $(PYTEST_XDIST) -m slow --junitxml=reports/pytest-slow.xml

# The interop suite's peer (tests/interop, docs/interop.md): ocpp-rpc from npm at the version
# package-lock.json pins, installed again only when the lock file is newer than node_modules.
INTEROP_NODE := tests/interop/node
interop-deps: $(INTEROP_NODE)/node_modules/.package-lock.json

$(INTEROP_NODE)/node_modules/.package-lock.json: $(INTEROP_NODE)/package-lock.json
	npm ci --no-audit --no-fund --prefix $(INTEROP_NODE)
	touch $@

# docs/security.md: the attack catalogue with each attack's result from the last `make test`
# and `make test-slow` (reports/pytest.xml, reports/pytest-slow.xml); not part of either.
security-report: $(STAMP)
	$(PY) -m chargeward evidence attacks --test-report reports/pytest.xml \
		--test-report reports/pytest-slow.xml -o docs/security.md

# The documentation site (README's pages in docs/, mkdocs.yml) into site/, in strict mode: a
# broken link, a missing anchor or a page left out of the nav fails the build.
# tests/integration/test_docs.py builds it the same way in `make test`.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo-data site .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (a few minutes): publishing, the charger's streaming verify, 10,000 OCPP
# connections on one server process, firmware download throughput against nginx (from
# `make system-deps`), then the campaign planner (100,000 stations)
# and a 1,000-station rollout, then the audit log's Merkle tree in memory and in the database
# (append rate, proofs at 1,000,000 entries), then simulated fleets of 1,000 (SQLite) and
# 10,000 (PostgreSQL) stations running the real agent code through three rollouts each
# (about an hour in all), then firmware deltas between consecutive releases of real shared
# libraries (detools against bsdiff4 and zstd -19) and a 1,000-station rollout on 256 kbit/s
# lines with full images, deltas and site-local caches; figures merged into benchmarks/results/latest.json
# and, one table per benchmark, benchmarks/results/latest.md.
# Each runs even if an earlier one misses its target.
# Extra options: make bench BENCH_ARGS=--profile BENCH_VERIFY_ARGS=--profile
#                BENCH_CONNECTIONS_ARGS="--stations 2000" BENCH_DOWNLOAD_ARGS="--size-mib 8"
#                BENCH_SIM_ARGS="--stations 1000 --rollouts 2"
.PHONY: bench
bench: system-deps $(STAMP)
	$(PY) -m benchmarks.bench_publish $(BENCH_ARGS); status=$$?; \
	$(PY) -m benchmarks.bench_verify $(BENCH_VERIFY_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_connections $(BENCH_CONNECTIONS_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_download $(BENCH_DOWNLOAD_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_campaign $(BENCH_CAMPAIGN_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_merkle $(BENCH_MERKLE_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_audit $(BENCH_AUDIT_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_sim $(BENCH_SIM_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_delta $(BENCH_DELTA_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_bandwidth $(BENCH_BANDWIDTH_ARGS) || status=1; \
	$(PY) -m benchmarks.bench_proxy $(BENCH_PROXY_ARGS) || status=1; \
	exit $$status
