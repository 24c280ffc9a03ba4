#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time with libFuzzer, starting from the
# saved cases in fuzz/regressions. A crash fails the check and leaves its input in
# fuzz/artifacts/<target>/: copy it into fuzz/regressions/<target>/ so `cargo test` replays it
# forever after, then fix the parser.
#   tests/fuzz.sh [SECONDS_PER_TARGET]      (default 20)
source "$(dirname "$0")/lib.sh"
SECONDS_PER_TARGET=${1:-20}
CARGO_FUZZ_VERSION=0.13.1
CACHE=${BERTH_CACHE:-$HOME/.cache/berth}

# cargo-fuzz needs a nightly toolchain (sanitizer flags); both are installed once and cached.
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal || { echo "cannot install a nightly toolchain" >&2; exit 1; }
fi
FUZZ_BIN=$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION/bin
if [[ ! -x $FUZZ_BIN/cargo-fuzz ]]; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION" ||
    { echo "cannot install cargo-fuzz" >&2; exit 1; }
fi
export PATH=$FUZZ_BIN:$PATH
# The instrumented build is kept between runs, like every other tool.
export CARGO_TARGET_DIR=$CACHE/fuzz-target
cd "$ROOT"
cargo +nightly fuzz build || { echo "the fuzz targets do not build" >&2; exit 1; }

for target in $(cargo +nightly fuzz list); do
  corpus=$ROOT/fuzz/corpus/$target
  mkdir -p "$corpus"
  # New inputs go to the scratch corpus (first directory); the saved cases are only read.
  check "$target: ${SECONDS_PER_TARGET}s of libFuzzer finds no crash" \
    cargo +nightly fuzz run "$target" "$corpus" "fuzz/regressions/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10
done
finish
