# replog — make run · make stop · make test · make lint · make chaos · make bench
# See docs/ and ops/cluster.sh --help for the local cluster.

CARGO   ?= cargo
CLUSTER := ops/cluster.sh
BIN     := target/release

.PHONY: build run stop test lint chaos bench clean-cluster

build:
	$(CARGO) build --release --bins

run: build
	$(CLUSTER) up 3
	@echo
	@echo "replog cluster is up: nodes 1-3 on 127.0.0.1:7001-7003, metrics on :9101-9103"
	@echo "try:"
	@echo "  $(BIN)/replog topic create demo --partitions 3 --replication-factor 3"
	@echo "  seq 1 10 | $(BIN)/replog produce demo"
	@echo "  $(BIN)/replog consume demo --from-beginning --max-messages 10"
	@echo "  $(CLUSTER) kill 1   # then produce/consume again"
	@echo "  make stop"

stop:
	$(CLUSTER) down

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

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# CHAOS_RUNS, CHAOS_SECONDS, CHAOS_SEED, CHAOS_FAULTS pass through the
# environment; CHAOS_ARGS adds command-line arguments.
chaos:
	$(CARGO) run --release -p replog-chaos --bin chaos -- $(CHAOS_ARGS)

bench:
	bash ops/bench.sh

clean-cluster:
	$(CLUSTER) down --purge
