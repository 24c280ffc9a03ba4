#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time with libFuzzer, starting from the
# saved cases in fuzz/regressions. A crash fails the check and leaves its input in
# fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/ so `cargo test` replays it
# forever after, then fix the parser.
#   tests/fuzz.sh [SECONDS_PER_TARGET]      (default 20)
source "$(dirname "$0")/lib.sh"
SECONDS_PER_TARGET=${1:-20}
source "$ROOT/scripts/tools.sh"
set +e
ensure_cargo_fuzz || { echo "cannot install cargo-fuzz or a nightly toolchain" >&2; exit 1; }
export PATH=$(cargo_fuzz_bin):$PATH
# The instrumented build is kept between runs, like every other tool.
export CARGO_TARGET_DIR=$BERTH_CACHE/fuzz-target
cd "$ROOT"
cargo +nightly fuzz build || { echo "the fuzz targets do not build" >&2; exit 1; }

# fuzz TARGET: runs one target; its output and exit code go to $LOGS/TARGET.{log,rc}.
fuzz() {
  local corpus=$ROOT/fuzz/corpus/$1
  mkdir -p "$corpus"
  # New inputs go to the scratch corpus (first directory); the saved cases are only read.
  cargo +nightly fuzz run "$1" "$corpus" "fuzz/regressions/$1" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 >"$LOGS/$1.log" 2>&1
  echo $? >"$LOGS/$1.rc"
}
# replay TARGET: what `fuzz` left, as a check's output and status.
replay() {
  cat "$LOGS/$1.log"
  return "$(cat "$LOGS/$1.rc" 2>/dev/null || echo 1)"
}

LOGS=$(mktemp -d)
on_exit "rm -rf $LOGS"
mapfile -t targets < <(cargo +nightly fuzz list)
# Each libFuzzer run is one process on one core: as many at a time as there are cores.
parallel=$(nproc)
for ((i = 0; i < ${#targets[@]}; i += parallel)); do
  for target in "${targets[@]:i:parallel}"; do fuzz "$target" & done
  wait
done
for target in "${targets[@]}"; do
  check "$target: ${SECONDS_PER_TARGET}s of libFuzzer finds no crash" replay "$target"
done
finish
