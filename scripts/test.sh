#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs what it needs (Debian packages,
# Go-built tools cached under ~/.cache/berth), checks formatting and lints, runs the Rust tests,
# then the OCI conformance suite and the real-client tests against the freshly built `berth`.
# Prints one summary table and a closing "N passed, M failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/tools.sh
export CARGO_INCREMENTAL=0 # one build per run: incremental state would only fill the disk
# tools.sh sets -e for its own runs; here a failing stage must not end the suite before its summary.
set +e
export CARGO_TERM_COLOR=never

declare -a NAMES=() RESULTS=() TIMES=()
TOTAL_PASSED=0
TOTAL_FAILED=0

# stage NAME COMMAND...: runs one stage, records its result and time; its own "N passed, M failed"
# line (if it prints one) is added to the totals, otherwise the stage counts as one test.
stage() {
  local name=$1 start=$SECONDS log rc p f
  shift
  log=$(mktemp)
  echo
  echo "=== $name"
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  read -r p f < <(awk '/^[0-9]+ passed, [0-9]+ failed/ {p=$1; f=$3} END {print p+0, f+0}' "$log")
  # cargo test prints one "test result:" line per test binary
  if grep -q '^test result:' "$log"; then
    read -r p f < <(awk '/^test result:/ {for (i=1;i<=NF;i++) {if ($(i)=="passed;") p+=$(i-1); if ($(i)=="failed;") f+=$(i-1)}} END {print p+0, f+0}' "$log")
  fi
  if ((p + f == 0)); then
    if ((rc == 0)); then p=1; else f=1; fi
  elif ((rc != 0 && f == 0)); then
    f=1
  fi
  TOTAL_PASSED=$((TOTAL_PASSED + p))
  TOTAL_FAILED=$((TOTAL_FAILED + f))
  NAMES+=("$name")
  RESULTS+=("$([[ $rc == 0 ]] && echo ok || echo FAILED) ($p passed, $f failed)")
  TIMES+=("$((SECONDS - start))s")
  rm -f "$log"
}

# The clippy-driver of the toolchain in use (installing the component if it is missing).
clippy_driver() {
  local driver
  driver=$(rustup which clippy-driver 2>/dev/null) || {
    rustup component add clippy >&2 && driver=$(rustup which clippy-driver)
  }
  echo "$driver"
}

provision() {
  ensure_debs skopeo containerd postgresql curl python3 python3-yaml ca-certificates util-linux mount lua5.4 podman buildah runc uidmap fuse-overlayfs strace prometheus \
    chromium chromium-driver python3-selenium &&
  for t in conformance conformance-main crane oras regctl cosign registry helm kubeconform minio weed; do ensure_tool "$t" || return 1; done &&
  bash e2e/k8s-tools.sh &&
  ensure_cargo_fuzz
}

# Provisioning runs beside the build: on a fresh machine both are long, and neither needs the
# other. Where downloads or package installs are slow this hides them behind the compile; where both
# are bound by the CPU it costs nothing. Its output is shown when its stage is reached, after the
# build; every stage that runs a tool comes after that.
PROVISIONING=$(mktemp -d)
(
  started=$SECONDS
  provision >"$PROVISIONING/log" 2>&1
  rc=$?
  echo "provisioning took $((SECONDS - started))s, beside the build" >>"$PROVISIONING/log"
  echo "$rc" >"$PROVISIONING/rc"
) &
PROVISIONING_PID=$!

# provisioned: waits for the provisioning started above; its output and exit code (a failure if it
# ended without one, e.g. killed).
provisioned() {
  while [[ ! -s $PROVISIONING/rc ]] && kill -0 "$PROVISIONING_PID" 2>/dev/null; do sleep 1; done
  cat "$PROVISIONING/log"
  [[ -s $PROVISIONING/rc ]] || { echo "provisioning ended without an exit code" >&2; return 1; }
  return "$(cat "$PROVISIONING/rc")"
}

# One build serves every stage after it. clippy-driver, as the compiler wrapper of the workspace's
# own crates, lints them while they compile (what `cargo clippy` does, with code generation), and
# building every target in one invocation resolves features once: the CRD check, the tests, the
# shell suites and the image all use these very artifacts, and nothing is compiled twice.
LINTED=(env RUSTC_WORKSPACE_WRAPPER="$(clippy_driver)" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")

stage "cargo fmt --check" cargo fmt --all -- --check
stage "clippy and build" "${LINTED[@]}" cargo build --workspace --all-targets
# The registry's documented lean build (filesystem and SQLite only) is linted too, or it rots.
stage "registry without S3 and PostgreSQL" cargo clippy -p berth-registry --no-default-features --all-targets -- -D warnings
stage "provision tools" provisioned
rm -rf "$PROVISIONING"
stage "no import circles" python3 scripts/module-cycles.py
stage "CRDs match the Rust types" target/debug/crdgen check crds charts/berth-operator/files/crds
stage "cargo test" "${LINTED[@]}" cargo test --workspace --no-fail-fast
stage "OCI conformance suite" bash tests/conformance.sh
stage "real clients" bash tests/clients.sh
stage "pull-through cache clients" bash tests/proxy-clients.sh
stage "access control clients" bash tests/auth-clients.sh
stage "garbage collection with real clients" bash tests/gc.sh
stage "replication with real clients" bash tests/replicate.sh
stage "events and webhooks" bash tests/events.sh
stage "alerts and dashboard (promtool, Prometheus)" bash tests/monitoring.sh
stage "web UI (headless Chromium)" bash tests/ui.sh
stage "durability and a full disk" bash tests/durability.sh
stage "storage on S3 servers" "${LINTED[@]}" bash tests/s3.sh
stage "replicas on S3 and PostgreSQL" bash tests/replicas.sh
stage "fuzzing (20 s per target)" bash tests/fuzz.sh 20
stage "Argo CD health check" lua5.4 docs/argocd/health_test.lua docs/argocd
stage "container image" bash tests/image.sh

echo
echo "=== summary"
for i in "${!NAMES[@]}"; do
  printf '  %-28s %-32s %s\n' "${NAMES[i]}" "${RESULTS[i]}" "${TIMES[i]}"
done
echo
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
((TOTAL_FAILED == 0))
