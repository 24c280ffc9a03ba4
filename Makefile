.PHONY: run test tools e2e-tools demo bench fmt lint

# Run the registry with the embedded defaults: 127.0.0.1:5000, data in ./berth-data.
run:
	cargo run --release -p berth-registry -- serve

# Everything CI runs: installs its tools, lints, unit, conformance and real-client tests.
test:
	bash scripts/test.sh

tools:
	bash scripts/tools.sh

# Build the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kubectl)
# from the Go module proxy into ~/.cache/berth.
e2e-tools:
	bash e2e/k8s-tools.sh

# A local Kubernetes with Berth running in it; prints how to push. Ctrl-C stops everything.
demo: e2e-tools
	cargo build -p berth-registry -p berth-e2e --bins
	./target/debug/berth-cluster

# Measure berth beside CNCF Distribution (and zot) on this machine; see docs/benchmarks.md.
bench:
	bash scripts/bench.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
