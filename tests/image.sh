#!/usr/bin/env bash
# The Berth image, built here with podman FROM scratch from the binaries the suite tested: a
# container of it serves `berth` (push and pull with crane), starts `berth-operator --help`, runs
# as non-root, and stays small.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"
CRANE=$(tool_path crane)

TAG=localhost/berth:test-$$
echo "== image"
# From the binaries the suite built and tested (BERTH_BIN_DIR, default target/debug).
if ! BERTH_BIN_DIR=${BERTH_BIN_DIR:-$ROOT/target/debug} bash "$ROOT/scripts/image.sh" "$TAG" >/dev/null; then
  echo "image build failed" >&2
  exit 1
fi
on_exit "podman rmi -f $TAG"
# podman's default open-files and process limits are above what this machine lets a container
# set: use the host's open-files limit and a modest process limit (berth needs few threads).
LIMITS=(--runtime runc --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
PODMAN=(podman run "${LIMITS[@]}" --rm --network host)

check "the image runs as the non-root user 65532" bash -c "[[ \$(podman image inspect --format '{{.Config.User}}' $TAG) == 65532:65532 ]]"
# Measured on the suite's own binaries (workspace crates at opt-level 1, stripped), which are larger
# than a release build's; the PostgreSQL client took them past 40 MB, garbage collection with
# retention and the operator's GC CronJob to about 45.5 MB, events, webhooks, the audit log and
# replication (berth replicate, the ReplicationPolicy controller) to about 48.5 MB, the node
# mirror and the web UI to about 51 MB. (A release build is far smaller.)
check "the image is small (< 56 MB)" bash -c "(( \$(podman image inspect --format '{{.Size}}' $TAG) < 56000000 ))"
# The whole output first: `grep -q` in a pipe stops reading at its match, and podman, still
# writing, would fail on the closed pipe.
operator_help() {
  local out
  out=$("${PODMAN[@]}" --entrypoint berth-operator "$TAG" --help) && grep -q 'reconciles Berth registries' <<<"$out"
}
check "berth-operator starts and prints its help" operator_help

PORT=$(free_port)
NAME=berth-image-test-$$
podman run "${LIMITS[@]}" -d --rm --network host --name "$NAME" "$TAG" serve --listen "127.0.0.1:$PORT" >/dev/null
on_exit "podman stop -t 2 $NAME"
check "a container of the image serves the registry API" wait_for "http://127.0.0.1:$PORT/v2/" 30
check "crane pushes to it and reads back the digest" bash -c "
  cd \$(mktemp -d) && head -c 100000 /dev/urandom > layer && tar cf layer.tar layer &&
  d=\$('$CRANE' append --insecure -f layer.tar -t 127.0.0.1:$PORT/image/test:v1 2>/dev/null) &&
  [[ \$('$CRANE' digest --insecure 127.0.0.1:$PORT/image/test:v1) == \${d#*@} ]]"
finish
