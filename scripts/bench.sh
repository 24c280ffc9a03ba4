#!/usr/bin/env bash
# Benchmarks berth beside CNCF Distribution v3 (and zot, when it can be built) on this machine,
# with the machine's limits measured in the same run. Not part of the test suite.
#   scripts/bench.sh [--quick] [--out FILE]      (default FILE: target/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tools.sh
ensure_debs wrk iperf3 postgresql curl skopeo
ensure_tool registry
ensure_tool minio
cargo build --release -p berth-registry -p berth-bench
args=(--berth target/release/berth --distribution "$(tool_path registry)" --minio "$(tool_path minio)"
  --skopeo "$(command -v skopeo)")
if ensure_tool regsync 2>/dev/null; then
  args+=(--regsync "$(tool_path regsync)")
else
  echo "bench: regsync could not be built; comparing replication with skopeo sync only" >&2
fi
if ensure_tool zot 2>/dev/null; then
  args+=(--zot "$(tool_path zot)")
else
  echo "bench: zot is not available from the Go module proxy here; measuring without it" >&2
fi
out=target/benchmarks.md
quick=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=(--quick) ;;
    --out) out=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
{
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "openssl speed sha256 (1 MiB blocks): $(openssl speed -evp sha256 -bytes 1048576 -seconds 1 2>/dev/null | awk '/^sha256/ {printf "%.0f MB/s", $2/1000}')"
  echo
} >"$out.head"
./target/release/berth-bench "${args[@]}" "${quick[@]}" --out "$out.body"
cat "$out.head" "$out.body" >"$out" && rm -f "$out.head" "$out.body"
echo "results in $out"
