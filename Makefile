# raftkv — everything a newcomer needs is `make run` and `make test`.
# The first target that needs the virtualenv creates it from constraints.txt.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SIM_SEEDS ?= 0:10000
TEST_SIM_SEEDS ?= 0:300

.PHONY: run test browser bytecode lint sim sim-driver sim-kv fuzz fuzz-peer mutate fmt clean venv proto bench bench-vs-etcd bench-etcdctl-perf chaos trace-hashes

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The package is installed editable, so its modules are byte-compiled here, not by pip: every
# process started from it (each `raftkv serve` of a test cluster, each CLI call) then loads
# them instead of compiling ~450 modules itself (0.4 s a process), also where
# PYTHONDONTWRITEBYTECODE keeps Python from caching what it compiles. Stale files are
# ignored by the import system (it checks each source's mtime), so this only saves time.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src

## run: start a local 3-node cluster (raftkv dev): clients on 8080-8082, data in ./data/dev
run: $(STAMP) bytecode
	$(BIN)/raftkv dev

## test: the whole test suite (unit, interaction scripts, paper tests, bounded simulator sweep) and lint,
## on TEST_WORKERS pytest workers (pytest-xdist); the tests that run clusters of real processes
## (tests/e2e, tests/integration) share one worker, so one such cluster runs at a time
## (tests/conftest.py)
TEST_WORKERS ?= 2
test: $(STAMP) browser bytecode
	RAFTKV_TEST_SIM_SEEDS=$(TEST_SIM_SEEDS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup
	$(MAKE) --no-print-directory lint

## browser: Debian's chromium and chromium-driver for the console's browser tests, installed
## when missing if we are root with apt-get; otherwise those tests skip, saying why
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(BROWSER_PACKAGES) (apt-get) for the console's browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && \
		  apt-get install -y -q --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; } || \
		echo "could not install $(BROWSER_PACKAGES): the console's browser tests will skip"; \
	else echo "no chromium, and not root with apt-get to install it: the console's browser tests will skip"; fi

## lint: ruff (lint + format check) on everything, mypy --strict on the package, examples, benchmarks
lint: $(STAMP)
	$(BIN)/ruff check src tests tools benchmarks examples
	$(BIN)/ruff format --check src tests tools benchmarks examples
	$(BIN)/mypy src/raftkv examples benchmarks

## sim: a long simulator sweep in swarm mode; prints seeds/s and violations
sim: $(STAMP)
	$(BIN)/python -m raftkv.testing.sim --seeds $(SIM_SEEDS) --swarm --jobs 2

## sim-driver: a long sweep of the driver simulator (real asyncio nodes, seeded faults)
DRIVER_SIM_SEEDS ?= 0:2000
sim-driver: $(STAMP)
	$(BIN)/python -m raftkv.testing.sim driver --seeds $(DRIVER_SIM_SEEDS)

## sim-kv: a long sweep of the KV simulation (leases, watches, the KV state machine under faults)
KV_SIM_SEEDS ?= 0:1000
sim-kv: $(STAMP)
	$(BIN)/python -m raftkv.testing.sim kv --seeds $(KV_SIM_SEEDS)

## fuzz-peer: hostile but well-formed peer frames and snapshots at 3 real nodes, on TCP then gRPC (seeded; make test runs one seed briefly)
FUZZ_PEER_SEEDS ?= 0:20
FUZZ_PEER_BATCHES ?= 30
fuzz-peer: $(STAMP)
	$(BIN)/python -m raftkv.testing.peer_fuzz --seeds $(FUZZ_PEER_SEEDS) --batches $(FUZZ_PEER_BATCHES) --peer-transport tcp
	$(BIN)/python -m raftkv.testing.peer_fuzz --seeds $(FUZZ_PEER_SEEDS) --batches $(FUZZ_PEER_BATCHES) --peer-transport grpc

## fuzz: the client port (schemathesis from /openapi.json, compressed bodies, connection
## floods, unread watchers, garbage bytes) at a real cluster, then fuzz-peer; make test runs both briefly
FUZZ_EXAMPLES ?= 200
FUZZ_SCALE ?= 3
fuzz: $(STAMP)
	RAFTKV_TEST_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) RAFTKV_TEST_FUZZ_SCALE=$(FUZZ_SCALE) \
		$(BIN)/python -m pytest -q tests/e2e/test_e2e_fuzz.py
	$(MAKE) --no-print-directory fuzz-peer

## mutate: break the core on purpose (tools/mutate.py) and check the tests catch each bug
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py --seeds $(TEST_SIM_SEEDS)

## chaos: a real 3-member cluster in network namespaces under kill -9, SIGSTOP, partitions,
## full disks and member replacement; every answer checked against the store's history (root)
CHAOS_SECONDS ?= 180
CHAOS_SEED ?=
chaos: $(STAMP)
	$(BIN)/python -m raftkv.testing.chaos --duration $(CHAOS_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

## trace-hashes: record (TRACE_FILE absent) or compare the simulators' trace hashes over
## TRACE_SEEDS: a refactoring must leave every seed's trace as it was
TRACE_FILE ?= trace-hashes.json
TRACE_SEEDS ?= 0:500
trace-hashes: $(STAMP)
	@if [ -f $(TRACE_FILE) ]; then $(BIN)/python tools/trace_hashes.py compare $(TRACE_FILE) --jobs 2; \
	else $(BIN)/python tools/trace_hashes.py record $(TRACE_FILE) --seeds $(TRACE_SEEDS) --jobs 2; fi

## proto: regenerate the protobuf and gRPC modules from the peer protocol (raft.proto) and
## etcd's API (src/raftkv/etcd/proto); tests check the checked-in files match what this produces
PROTOS := src/raftkv/raft/transport/raft.proto src/raftkv/etcd/proto/auth.proto src/raftkv/etcd/proto/kv.proto src/raftkv/etcd/proto/rpc.proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src \
		--grpc_python_out=src $(PROTOS)

## fmt: apply ruff's formatting and autofixes
fmt: $(STAMP)
	$(BIN)/ruff check --fix src tests tools benchmarks examples
	$(BIN)/ruff format src tests tools benchmarks examples

## bench: the benchmarks (not part of make test): Raft throughput, HTTP API, a million keys
bench: $(STAMP)
	$(BIN)/python benchmarks/raft_throughput.py
	$(BIN)/python benchmarks/http_kv.py
	$(BIN)/python benchmarks/kv_scale.py

## bench-vs-etcd: raftkv against etcd, 3 members each, same wrk load; prints raftkv/etcd ratios
## (needs etcd and wrk; ~20 min; not part of make test). A quick look:
## make bench-vs-etcd VS_ETCD_ARGS="--ops put --conns 1 64 --reps 1 --duration 5"
## Then etcd's own client at both: etcdctl check perf (bench-etcdctl-perf alone: ~2 min per load).
VS_ETCD_ARGS ?=
bench-vs-etcd: $(STAMP)
	$(BIN)/python benchmarks/vs_etcd.py $(VS_ETCD_ARGS)
	$(BIN)/python benchmarks/etcdctl_perf.py $(ETCDCTL_PERF_ARGS)

## bench-etcdctl-perf: etcdctl check perf at etcd and at raftkv's etcd API (default --loads s)
ETCDCTL_PERF_ARGS ?=
bench-etcdctl-perf: $(STAMP)
	$(BIN)/python benchmarks/etcdctl_perf.py $(ETCDCTL_PERF_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
