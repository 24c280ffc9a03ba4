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

# free_port: a loopback port for a server this suite starts, by berth_core::ports' rule: drawn at
# random below the kernel's ephemeral range (which outgoing connections take their local ports
# from, so none can take it before the server binds it) and checked by binding it.
free_port() {
  python3 - <<'PY'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 0
span = range(20000, low) if low >= 21000 else range(20000, 32768)
# A crowded range falls back to the kernel's choice (port 0).
for port in [random.choice(span) for _ in range(200)] + [0]:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(s.getsockname()[1])
        break
PY
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

# eventually SECONDS CMD...: polls CMD (a command or a function) until it succeeds or the time is up.
eventually() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
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

# start_limited_upstream: a berth (UP, its address) behind tests/ratelimited_upstream.py, which
# reports how many pulls are left as Docker Hub does (LIMITED, its address).
start_limited_upstream() {
  start_berth || return 1
  UP=$BERTH_ADDR
  LIMITED=127.0.0.1:$(free_port)
  python3 "$ROOT/tests/ratelimited_upstream.py" "${LIMITED#*:}" "http://$UP" >"$WORK/limited.log" 2>&1 &
  on_exit "kill $!"
  wait_for "http://$LIMITED/v2/" 20
}

# start_distribution BIN [LOG]: CNCF Distribution (BIN) on a free port of loopback, content in
# $WORK/distribution, deletes enabled; sets DIST_ADDR (host:port). Its output goes to
# $WORK/distribution.log; LOG is its `log:` setting (default: errors only).
start_distribution() {
  local bin=$1 log=${2:-"{level: error}"} port
  port=$(free_port)
  DIST_ADDR=127.0.0.1:$port
  cat >"$WORK/distribution.yml" <<YAML
version: 0.1
log: $log
storage: {filesystem: {rootdirectory: $WORK/distribution}, delete: {enabled: true}}
http: {addr: $DIST_ADDR}
YAML
  OTEL_TRACES_EXPORTER=none "$bin" serve "$WORK/distribution.yml" >"$WORK/distribution.log" 2>&1 &
  on_exit "kill $!"
  wait_for "http://$DIST_ADDR/v2/" 20
}

# client_workspace: WORK, a temp dir removed on exit, with a HOME (and docker config) of its own
# for the clients' logins, and the test images in the OCI layout $WORK/layout; MULTI and
# MULTIARCH are the digests of its image and its multi-arch index.
client_workspace() {
  WORK=$(mktemp -d)
  on_exit "rm -rf $WORK"
  export HOME=$WORK/home DOCKER_CONFIG=$WORK/home/.docker
  mkdir -p "$DOCKER_CONFIG"
  python3 "$ROOT/tests/make_oci_layout.py" "$WORK/layout"
  MULTI=$(digest_in_layout multi)
  MULTIARCH=$(digest_in_layout multiarch)
}

# digest_in_layout NAME: the digest of the manifest named NAME in $WORK/layout.
digest_in_layout() {
  python3 - "$WORK/layout/index.json" "$1" <<'PY'
import json, sys
idx = json.load(open(sys.argv[1]))
print([m["digest"] for m in idx["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == sys.argv[2]][0])
PY
}

# htpasswd_users NAME...: adds each user to $WORK/htpasswd, with the password NAME-pw.
htpasswd_users() {
  local u
  for u in "$@"; do
    echo "$u:$(printf '%s' "$u-pw" | "$BERTH_BIN" hash-password --cost 6)" >>"$WORK/htpasswd"
  done
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

# start_minio DIR: a MinIO server of its own under DIR; sets MINIO_URL, MINIO_USER, MINIO_PASSWORD.
start_minio() {
  local dir=$1 port console
  port=$(free_port)
  console=$(free_port)
  mkdir -p "$dir/data"
  MINIO_URL=http://127.0.0.1:$port MINIO_USER=berth-test MINIO_PASSWORD=berth-test-secret
  MINIO_ROOT_USER=$MINIO_USER MINIO_ROOT_PASSWORD=$MINIO_PASSWORD MINIO_BROWSER=off MINIO_UPDATE=off \
    "$(tool_path minio)" server "$dir/data" --quiet --address "127.0.0.1:$port" \
    --console-address "127.0.0.1:$console" >"$dir/minio.log" 2>&1 &
  on_exit "kill $!"
  wait_for "$MINIO_URL/minio/health/ready" 30
}

# start_seaweedfs DIR: SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process)
# under DIR, every port its own, nothing but S3 served; sets SEAWEED_URL, SEAWEED_USER,
# SEAWEED_PASSWORD (an admin identity, from the AWS_* variables weed reads at start).
start_seaweedfs() {
  local dir=$1 p=()
  for _ in 1 2 3 4 5 6 7 8; do p+=("$(free_port)"); done
  mkdir -p "$dir/data"
  SEAWEED_URL=http://127.0.0.1:${p[0]} SEAWEED_USER=berth-test SEAWEED_PASSWORD=berth-test-secret
  AWS_ACCESS_KEY_ID=$SEAWEED_USER AWS_SECRET_ACCESS_KEY=$SEAWEED_PASSWORD \
    "$(tool_path weed)" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="${p[0]}" -s3.port.grpc="${p[1]}" -master.port="${p[2]}" -master.port.grpc="${p[3]}" \
    -volume.port="${p[4]}" -volume.port.grpc="${p[5]}" -filer.port="${p[6]}" -filer.port.grpc="${p[7]}" \
    -s3.port.iceberg=0 -s3.port.lance=0 -webdav=false -admin.ui=false -admin.port.legacy=0 \
    -master.telemetry=false >"$dir/weed.log" 2>&1 &
  on_exit "kill $!"
  wait_for "$SEAWEED_URL/" 60
}

# start_postgres: a PostgreSQL cluster of its own in a fresh temp dir (trust auth, loopback only);
# sets PG_URL, PSQL (an array: psql connected to it), and PG_STOP and PG_START (commands that stop
# and start it again, for outage tests). As root, the server runs as `postgres`.
start_postgres() {
  local dir port bin as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  port=$(free_port)
  dir=$(mktemp -d)
  on_exit "rm -rf $dir"
  if ((EUID == 0)); then
    chown postgres "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U berth >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
  PG_START=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off" start)
  PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -w -t 30 -m fast stop)
  "${PG_START[@]}" >/dev/null || { cat "$dir/postgres.log"; return 1; }
  on_exit "${as[*]} $bin/pg_ctl -D $dir/data -m immediate stop"
  PG_URL=postgres://berth@127.0.0.1:$port/postgres
  PSQL=(psql -X -q -t -A -v ON_ERROR_STOP=1 "$PG_URL")
}

# stored_blobs DATA: how many blobs the filesystem store of the data directory DATA holds, files
# (DATA/storage) and small objects (rows of DATA/meta.db) both.
stored_blobs() {
  python3 - "$1" <<'EOF'
import os, sqlite3, sys
data = sys.argv[1]
root = os.path.join(data, "storage")
keys = set()
for d, _, files in os.walk(os.path.join(root, "blobs")):
    keys.update(os.path.relpath(os.path.join(d, f), root) for f in files)
db = sqlite3.connect(os.path.join(data, "meta.db"), timeout=30)
if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'small_objects'").fetchone():
    keys.update(k for (k,) in db.execute("SELECT key FROM small_objects WHERE key LIKE 'blobs/%'"))
print(len(keys))
EOF
}

# overwrite_object DATA KEY BYTES: replaces what the filesystem store of the data directory DATA
# holds at KEY, a row or a file, underneath berth (bit rot).
overwrite_object() {
  python3 - "$@" <<'EOF'
import os, sqlite3, sys
data, key, value = sys.argv[1], sys.argv[2], sys.argv[3].encode()
db = sqlite3.connect(os.path.join(data, "meta.db"), timeout=30)
if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'small_objects'").fetchone():
    if db.execute("UPDATE small_objects SET data = ? WHERE key = ?", (value, key)).rowcount:
        db.commit()
        sys.exit(0)
path = os.path.join(data, "storage", key)
os.makedirs(os.path.dirname(path), exist_ok=True)
open(path, "wb").write(value)
EOF
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
