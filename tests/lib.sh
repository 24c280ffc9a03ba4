# Shared helpers for Berth's shell-driven tests (sourced, not run).
#
# Every server a test starts listens on 127.0.0.1 on a free port, lives in a temp dir, and is
# stopped by the EXIT trap whatever happens. Checks are counted; `finish` prints the closing
# "N passed, M failed" line and sets the exit code.

set -uo pipefail

PASSED=0
FAILED=0
FAILURES=()
CLEANUP=()

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BERTH_BIN=${BERTH_BIN:-$ROOT/target/debug/berth}

cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

on_exit() { CLEANUP+=("$1"); }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for URL SECONDS: polls until URL answers (any HTTP status) or the deadline passes.
wait_for() {
  local url=$1 deadline=$((SECONDS + ${2:-20}))
  while ((SECONDS < deadline)); do
    curl -s -o /dev/null "$url" && return 0
    sleep 0.1
  done
  echo "timed out waiting for $url" >&2
  return 1
}

# start_berth [extra serve args...]: starts berth, sets BERTH_ADDR (host:port), BERTH_URL, BERTH_DIR, BERTH_PID.
start_berth() {
  BERTH_DIR=$(mktemp -d)
  local port
  port=$(free_port)
  BERTH_ADDR=127.0.0.1:$port
  BERTH_URL=http://$BERTH_ADDR
  "$BERTH_BIN" serve --listen "$BERTH_ADDR" --data-dir "$BERTH_DIR/data" "$@" >"$BERTH_DIR/log" 2>&1 &
  BERTH_PID=$!
  on_exit "kill $BERTH_PID; rm -rf $BERTH_DIR"
  wait_for "$BERTH_URL/v2/" 20
}

# require_tools PATH...: each built tool (scripts/tools.sh) must be there.
# require_commands NAME...: each command (Debian packages) must be installed.
require_tools() {
  local t
  for t in "$@"; do [[ -x $t ]] || { echo "missing $t: run scripts/tools.sh" >&2; exit 1; }; done
}
require_commands() {
  local c
  for c in "$@"; do command -v "$c" >/dev/null || { echo "$c is not installed" >&2; exit 1; }; done
}

# start_containerd DIR: a containerd of its own under DIR (no CRI), with CTR set to a ctr talking
# to it in the namespace berth-test.
start_containerd() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
EOF
  containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
  on_exit "kill $!"
  CTR=(ctr --address "$dir/containerd.sock" --namespace berth-test)
  local deadline=$((SECONDS + 20))
  until "${CTR[@]}" version >/dev/null 2>&1 || ((SECONDS > deadline)); do sleep 0.1; done
}

# check NAME COMMAND...: runs COMMAND, counts it, shows its output only when it fails.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    PASSED=$((PASSED + 1))
    printf '  ok    %s\n' "$name"
  else
    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    printf '  FAIL  %s\n' "$name"
    printf '%s\n' "$out" | tail -n 25 | sed 's/^/        | /'
  fi
}

# equal A B: succeeds when the two strings are equal, says both otherwise.
equal() {
  [[ $1 == "$2" ]] || { echo "expected: $2"; echo "     got: $1"; return 1; }
}

finish() {
  echo
  if ((FAILED > 0)); then
    printf 'failed: %s\n' "${FAILURES[@]}"
  fi
  echo "$PASSED passed, $FAILED failed"
  ((FAILED == 0))
}
