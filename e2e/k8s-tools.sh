#!/usr/bin/env bash
# Builds the Kubernetes control plane Berth's end-to-end tests run against, from the Go module
# proxy: kube-apiserver, kube-controller-manager and kubectl from k8s.io/kubernetes, and etcd from
# go.etcd.io/etcd/server/v3. Cached in $BERTH_CACHE/<tool>-<version>/bin.
#
# k8s.io/kubernetes cannot be built as a plain dependency: its go.mod replaces every k8s.io/*
# staging module with a folder of its own repository. A wrapper module does what that repository
# does for its release: it pins each staging module (read from the release's own go.mod) to the
# published v0.X.Y that matches v1.X.Y.
set -euo pipefail
source "$(dirname "$0")/../scripts/tools.sh"

source "$(dirname "${BASH_SOURCE[0]}")/versions.env"

_k8s_wrapper() {
  local dir=$1 gomod staging
  gomod=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || { echo "k8s-tools: cannot download k8s.io/kubernetes@$K8S_VERSION" >&2; return 1; }
  staging="v0.${K8S_VERSION#v1.}"
  mkdir -p "$dir"
  {
    echo "module berth.dev/e2e/k8s-tools"
    echo
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.X.Y"
    sed -n 's#^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
}

ensure_k8s() {
  local dest="$BERTH_CACHE/kubernetes-$K8S_VERSION-b$K8S_BUILD"
  if [[ -x $dest/bin/kube-apiserver && -x $dest/bin/kube-controller-manager && -x $dest/bin/kubectl ]]; then
    return 0
  fi
  echo "k8s-tools: building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl)" >&2
  local work tmp="$dest.tmp.$$"
  work=$(mktemp -d)
  _k8s_wrapper "$work"
  rm -rf "$tmp" && mkdir -p "$tmp/bin"
  # The release's own version stamp, so /version and `kubectl version` tell the truth.
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags="-s"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    (cd "$work" && go build -trimpath -ldflags="$ldflags" -tags tools -o "$tmp/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  rm -rf "$work" "$dest" && mv "$tmp" "$dest"
}

ensure_etcd() {
  local dest="$BERTH_CACHE/etcd-$ETCD_VERSION" work tmp
  [[ -x $dest/bin/etcd ]] && return 0
  echo "k8s-tools: building etcd $ETCD_VERSION" >&2
  work=$(mktemp -d)
  tmp="$dest.tmp.$$"
  cat >"$work/go.mod" <<MOD
module berth.dev/e2e/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat >"$work/main.go" <<'GO'
// etcd, as its own release builds it: the server's entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$work" && go mod tidy >/dev/null && go build -trimpath -ldflags=-s -o "$tmp/bin/etcd" .)
  rm -rf "$work" "$dest" && mv "$tmp" "$dest"
}

k8s_bin() { echo "$BERTH_CACHE/kubernetes-$K8S_VERSION-b$K8S_BUILD/bin/$1"; }
etcd_bin() { echo "$BERTH_CACHE/etcd-$ETCD_VERSION/bin/etcd"; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  ensure_etcd
  ensure_k8s
fi
