# replog — make run · make stop · make test · make lint · make chaos · make soak · make fuzz · make bench · make bench-move · make bench-restart · make bench-stages · make memory · make rejoin · make membership
# See docs/ and ops/cluster.sh --help for the local cluster.

CARGO   ?= cargo
CLUSTER := ops/cluster.sh
BIN     := target/release

.PHONY: build run stop test lint check-ops chaos soak fuzz bench bench-schemas bench-move bench-restart bench-stages memory rejoin membership clean-cluster

build:
	$(CARGO) build --release --bins

run: build
	$(CLUSTER) up 3
	@echo
	@echo "replog cluster is up: nodes 1-3 on 127.0.0.1:7001-7003, Kafka on :9091-9093, metrics on :9101-9103"
	@echo "try:"
	@echo "  $(BIN)/replog topic create demo --partitions 3 --replication-factor 3"
	@echo "  seq 1 10 | $(BIN)/replog produce demo"
	@echo "  $(BIN)/replog consume demo --from-beginning --max-messages 10"
	@echo "  $(CLUSTER) kill 1   # then produce/consume again"
	@echo "  make stop"

stop:
	$(CLUSTER) down

# The last steps are the chaos smoke (root: iptables, FUSE): a short run with
# a few faults (TLS and authorization on, the workload as a SCRAM user), the
# same faults under queue consumers (exactly-once settlement), one that
# SIGKILLs every node at once while writes are in flight, one that moves
# partitions on 4 nodes while killing their leaders, one that cuts
# every node's power (unsynced writes lost) and a 30 s soak (memory sampled,
# a fault every 10 s) — all must end with zero anomalies — then the same
# power cut with a planted skipped fsync, which must be caught
# (docs/chaos.md).
#
# cargo-nextest runs tests faster and isolates them per process, but it does
# not run doctests, so those run separately when nextest is used.
test:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace --no-fail-fast"; \
		$(CARGO) nextest run --workspace --no-fail-fast && \
		echo "$(CARGO) test --workspace --doc" && \
		$(CARGO) test --workspace --doc; \
	else \
		echo "cargo-nextest not installed; using cargo test"; \
		echo "$(CARGO) test --workspace"; \
		$(CARGO) test --workspace; \
	fi
	bash ops/smoke.sh
	bash ops/check-ops.sh
	$(CARGO) build --release --bins
	$(BIN)/replog-fuzz run --seconds 2
	CHAOS_SECURE=1 CHAOS_RUNS=1 CHAOS_SECONDS=20 CHAOS_WORKLOAD=log CHAOS_FAULTS=kill,pause,partition-leader CHAOS_OUT=target/chaos-smoke $(BIN)/chaos
	CHAOS_RUNS=1 CHAOS_SECONDS=15 CHAOS_FAULTS=kill-all CHAOS_OUT=target/chaos-smoke-kill-all $(BIN)/chaos
	CHAOS_RUNS=1 CHAOS_SECONDS=15 CHAOS_NODES=4 CHAOS_FAULTS=move CHAOS_OUT=target/chaos-smoke-move $(BIN)/chaos
	CHAOS_RUNS=1 CHAOS_SECONDS=20 CHAOS_WORKLOAD=queue CHAOS_FAULTS=kill,pause,partition-leader CHAOS_OUT=target/chaos-smoke-queue $(BIN)/chaos
	CHAOS_RUNS=1 CHAOS_SECONDS=15 CHAOS_FAULTS=power-fail,power-fail-all CHAOS_OUT=target/chaos-smoke-power $(BIN)/chaos
	CHAOS_RUNS=1 CHAOS_SECONDS=10 CHAOS_PARTITIONS=1 CHAOS_FAULTS=power-fail-all CHAOS_PLANT=skip-fsync CHAOS_OUT=target/chaos-smoke-plant $(BIN)/chaos
	SOAK_SECONDS=30 SOAK_PEAK_SECONDS=5 SOAK_FAULT_EVERY=10 SOAK_FAULTS=kill,pause,partition-leader SOAK_OUT=target/soak-smoke $(BIN)/soak

# promtool check config/rules, the compose file, the Kubernetes manifests
# (schema, strict) and the systemd unit; installs the tools it needs as root.
check-ops:
	bash ops/check-ops.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# CHAOS_RUNS, CHAOS_SECONDS, CHAOS_SEED, CHAOS_FAULTS (and the other knobs
# in docs/chaos.md) pass through the environment; CHAOS_ARGS adds
# command-line arguments. Runs as root (iptables, tc, and FUSE mounts of
# replog-faultfs for the power-fail faults); builds the release binaries
# first (as `make run` does) so that the runs test the current tree.
# CHAOS_PLANT=skip-fsync plants a skipped fsync in every node: the schedule
# then passes only if every run catches it (lost acknowledged writes), e.g.
#   CHAOS_PLANT=skip-fsync CHAOS_FAULTS=power-fail-all CHAOS_RUNS=1 make chaos
chaos: build
	$(CARGO) run --release -p replog-chaos --bin chaos -- $(CHAOS_ARGS)

# Every fuzz target under libFuzzer (coverage guided, stable toolchain) for
# FUZZ_SECONDS each (default 60); FUZZ_SEED, FUZZ_TARGETS and
# FUZZ_ENGINE=random pass through (docs/fuzzing.md). make test runs the
# random engine for 2 s per target.
fuzz:
	bash fuzz/run.sh
# SOAK_SECONDS (600), SOAK_RATE (default: half of the peak it measures
# first), SOAK_FAULT_EVERY (30), SOAK_FAULTS and the other knobs in
# docs/chaos.md pass through the environment. Root, as for make chaos.
# Ends with `soak: seconds=S records=N rss_slope_mb_per_min=X max_rss_mb=Y
# anomalies=Z`; RSS samples go to target/soak/rss.csv.
soak: build
	$(CARGO) run --release -p replog-chaos --bin soak

# The standard suite on a fresh 3-node release cluster, with the NATS R3 peer
# and a dd O_DSYNC 4 KiB write in the same run, under
# flock /tmp/replog-chaos.lock; writes docs/benchmarks.md (ops/bench.sh for
# the knobs: BENCH_QUICK=1, BENCH_SECONDS, BENCH_NATS=0, BENCH_ISOLATE=0).
bench:
	bash ops/bench.sh

# Validated against unvalidated produce of the same JSON events (docs/schemas.md).
bench-schemas:
	bash ops/bench-schemas.sh

# Produce latency during a partition move, with and without the move
# throttle (docs/membership.md); BIN_DIR, MOVE_MB, RATE, CASES, ROUNDS.
bench-move:
	$(CARGO) build --release -p replog-node -p replog-client --bins
	flock /tmp/replog-chaos.lock bash ops/bench-move.sh

# How long a node holding 1 GiB (RESTART_GIB) of log takes to serve again
# after SIGTERM and after SIGKILL (docs/benchmarks.md).
bench-restart:
	bash ops/bench-restart.sh

# Where one record's time goes, one record at a time: each stage from the
# SDK to the leader, the followers' fsyncs and back, from perf sched
# (STAGES_RATE, STAGES_SECONDS; docs/benchmarks.md).
bench-stages:
	bash ops/bench-stages.sh

# RSS of every node while 4 GiB (MEMORY_GB) is produced and read back.
memory:
	bash ops/memory.sh

clean-cluster:
	$(CLUSTER) down --purge

# A follower kept down while its partition takes REJOIN_GIB (1.5) GiB and
# retention releases the oldest part rejoins through a streamed snapshot
# of at least 1 GiB: prints the snapshot size, the time and the follower's
# peak RSS, and checks it serves the leader's records (release build; about
# 8 GB of disk under the system temporary directory).
rejoin:
	$(CARGO) nextest run --release -p replog-node --test t85_retention --run-ignored only --no-capture

# The membership flow of node/tests/t33_membership.rs at a larger scale
# (16 partitions, 8 writers, 2,000 records between steps), release build:
# 3 nodes grow to 5, a move survives its leader's SIGKILL, balance,
# decommission, rolling restart; prints the longest producer wait during
# the roll and every wait over 200 ms with its time (docs/membership.md).
membership:
	flock /tmp/replog-chaos.lock $(CARGO) nextest run --release -p replog-node --test t33_membership --run-ignored only --no-capture
