#!/usr/bin/env bash
# Provisions the external tools Berth's tests and benchmarks use, each built once into
# $BERTH_CACHE/<tool>-<version>/ and reused while that folder exists. Sourcing this file defines
# `tool_path NAME` and `ensure_tool NAME`; running it installs the tools named as arguments (or all).
#
# Go modules come from the Go module proxy; the checksum database is not reachable here, so it is
# switched off for these builds (each module's own go.sum still pins its dependencies).
set -euo pipefail

BERTH_CACHE=${BERTH_CACHE:-$HOME/.cache/berth}
export GOPROXY=${GOPROXY:-https://proxy.golang.org} GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local
# Versions the Rust tests read too.
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/versions.env"

# name|version|Go module|package inside the module ("-" = a test binary of the module's root)
#
# Each is built inside its own module's source tree with the module's own go.mod and go.sum, which
# pins every dependency exactly as its authors released it (and needs no version listing from the
# proxy, which refuses some listings here).
TOOLS=(
  "crane|v0.20.6|github.com/google/go-containerregistry|./cmd/crane"
  "regctl|v0.11.7|github.com/regclient/regclient|./cmd/regctl"
  "oras|v1.2.0|oras.land/oras|./cmd/oras"
  "cosign|v2.6.5|github.com/sigstore/cosign/v2|./cmd/cosign"
  "registry|$DISTRIBUTION_VERSION|github.com/distribution/distribution/v3|./cmd/registry"
  # The distribution-spec conformance suites: the Ginkgo suite of the v1.1 release line (a test
  # binary), and the rewritten suite of the main branch (a program). The exact v1.1.1 commit
  # (a139cc42) is refused by the module proxy (403).
  "conformance|v0.0.0-20231101194043-f2182352d4cc|github.com/opencontainers/distribution-spec/conformance|-"
  "conformance-main|v0.0.0-20260831232431-97274622c111|github.com/opencontainers/distribution-spec/conformance|."
  "helm|$HELM_VERSION|helm.sh/helm/v3|./cmd/helm"
  # The S3-compatible object store for storage tests (MinIO's last source release on the proxy).
  "minio|$MINIO_VERSION|github.com/minio/minio|."
  "weed|v0.0.0-20261109003541-7506e5f91cd6|github.com/seaweedfs/seaweedfs|./weed"
  "kubeconform|$KUBECONFORM_VERSION|github.com/yannh/kubeconform|./cmd/kubeconform"
  # Benchmarks only, and refused by the module proxy here (403): never in the default set.
  "zot|v2.1.8|zotregistry.dev/zot/v2|./cmd/zot"
  # Benchmarks only: a replication peer of `berth replicate`.
  "regsync|v0.11.7|github.com/regclient/regclient|./cmd/regsync"
)

_tool_line() {
  local t
  for t in "${TOOLS[@]}"; do
    [[ ${t%%|*} == "$1" ]] && { echo "$t"; return 0; }
  done
  echo "tools.sh: unknown tool $1" >&2
  return 1
}

# Prints the binary path of an installed tool (installing it first if needed).
tool_path() {
  local line name version
  line=$(_tool_line "$1") || return 1
  IFS='|' read -r name version _ <<<"$line"
  echo "$BERTH_CACHE/$name-$version/bin/$name"
}

# Builds package $3 of module $1@$2 into binary $4, inside a writable copy of the module.
_build_from_module() {
  local module=$1 version=$2 pkg=$3 out=$4 src work json
  json=$(cd "$(mktemp -d)" && go mod download -json "$module@$version" 2>&1) || true
  src=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
  if [[ ! -d $src ]]; then
    echo "tools.sh: could not download $module@$version:" >&2
    sed -n 's/^\t"Error": "\(.*\)",*$/  \1/p' <<<"$json" >&2
    return 1
  fi
  work=$(mktemp -d)
  cp -r "$src/." "$work/" && chmod -R u+w "$work"
  if [[ $pkg == - ]]; then
    (cd "$work" && go test -c -o "$out" .)
  else
    (cd "$work" && go build -trimpath -ldflags=-s -o "$out" "$pkg")
  fi
  rm -rf "$work"
}

ensure_tool() {
  local line name version module pkg dest
  line=$(_tool_line "$1") || return 1
  IFS='|' read -r name version module pkg <<<"$line"
  dest="$BERTH_CACHE/$name-$version"
  [[ -x $dest/bin/$name ]] && return 0
  echo "tools: building $name $version" >&2
  local tmp="$dest.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp/bin"
  _build_from_module "$module" "$version" "$pkg" "$tmp/bin/$name" || { rm -rf "$tmp"; return 1; }
  rm -rf "$dest" && mv "$tmp" "$dest"
}

# cargo-fuzz, and the nightly toolchain it needs (sanitizer flags), installed once and cached.
CARGO_FUZZ_VERSION=0.13.1
cargo_fuzz_bin() { echo "$BERTH_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION/bin"; }
ensure_cargo_fuzz() {
  cargo +nightly --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal || return 1
  [[ -x $(cargo_fuzz_bin)/cargo-fuzz ]] && return 0
  echo "tools: building cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$BERTH_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
}

# Debian packages the suite needs, installed once.
ensure_debs() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "tools: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  if [[ $# -eq 0 ]]; then
    set -- $(for t in "${TOOLS[@]}"; do [[ ${t%%|*} == zot || ${t%%|*} == regsync ]] || echo "${t%%|*}"; done)
  fi
  for t in "$@"; do ensure_tool "$t"; done
fi
