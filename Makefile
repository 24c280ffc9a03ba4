.PHONY: run test tools bench fmt lint

# Run the registry with the embedded defaults: 127.0.0.1:5000, data in ./berth-data.
run:
	cargo run --release -p berth-registry -- serve

# Everything CI runs: installs its tools, lints, unit, conformance and real-client tests.
test:
	bash scripts/test.sh

tools:
	bash scripts/tools.sh

# Measure berth beside CNCF Distribution (and zot) on this machine; see docs/benchmarks.md.
bench:
	bash scripts/bench.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
