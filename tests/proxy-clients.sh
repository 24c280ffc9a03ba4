#!/usr/bin/env bash
# Real clients pulling through Berth's pull-through cache. The upstream is CNCF Distribution
# holding test images under Docker Hub names; Berth mirrors it as docker.io. skopeo and crane pull
# by Berth's own names; containerd, given a hosts.toml mirror for docker.io, pulls
# docker.io/library/alpine by its original name (it cannot reach the real Docker Hub from here, so
# a successful pull can only have come through Berth).
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

CRANE=$(tool_path crane)
DISTRIBUTION=$(tool_path registry)
require_tools "$CRANE" "$DISTRIBUTION"
require_commands skopeo containerd ctr

client_workspace

# The upstream, with its own access log so the test can count what reached it.
start_distribution "$DISTRIBUTION" "{level: info, formatter: json}" || exit 1
UP=$DIST_ADDR
SK=(skopeo --insecure-policy)
"${SK[@]}" copy -q --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$UP/library/alpine:3.20" || exit 1
"${SK[@]}" copy -q --all --dest-tls-verify=false "oci:$WORK/layout:multiarch" "docker://$UP/library/alpine:multiarch" || exit 1
upstream_blob_gets() { grep -c '"http.request.method":"GET","http.request.remoteaddr"[^}]*"http.request.uri":"/v2/library/alpine/blobs/' "$WORK/distribution.log" || true; }

cat >"$WORK/berth.yaml" <<EOF
proxy:
  upstreams:
    - name: docker.io
      url: http://$UP
      aliases: [hub]
      default: true
      include: ["library/**"]
EOF
start_berth --config "$WORK/berth.yaml" || exit 1
R=$BERTH_ADDR

echo "== skopeo"
pull_layout() {
  local ref=$1 out=$2 want=$3 all=${4:-}
  rm -rf "$out" &&
  "${SK[@]}" copy -q $all --preserve-digests --src-tls-verify=false "docker://$ref" "oci:$out:pulled" &&
  equal "$(python3 -c "import json; print(json.load(open('$out/index.json'))['manifests'][0]['digest'])")" "$want" &&
  for blob in "$out"/blobs/sha256/*; do
    cmp -s "$blob" "$WORK/layout/blobs/sha256/$(basename "$blob")" || { echo "blob $(basename "$blob") differs"; return 1; }
  done
}
check "skopeo pulls docker.io/library/alpine through Berth, content identical" \
  pull_layout "$R/docker.io/library/alpine:3.20" "$WORK/sk1" "$MULTI"
check "skopeo pulls a multi-arch index through the hub alias" \
  pull_layout "$R/hub/alpine:multiarch" "$WORK/sk2" "$MULTIARCH" --all
BEFORE=$(upstream_blob_gets)
check "the cold pulls fetched blobs from the upstream (the log is read)" test "$BEFORE" -gt 0
check "a warm pull by another name form is served from the cache" \
  pull_layout "$R/alpine:3.20" "$WORK/sk3" "$MULTI"
check "the warm pull fetched no blob from the upstream" equal "$(upstream_blob_gets)" "$BEFORE"

echo "== crane"
check "crane resolves the tag through Berth" bash -c "[[ \$('$CRANE' --insecure digest $R/hub/alpine:3.20) == $MULTI ]]"
check "crane picks a platform out of the cached index" \
  bash -c "'$CRANE' --insecure manifest --platform linux/arm64 $R/docker.io/library/alpine:multiarch | grep -q layers"
check "crane lists the upstream's tags" bash -c "'$CRANE' --insecure ls $R/hub/alpine | sort | tr '\n' ' ' | grep -q '3.20 multiarch'"
check "crane cannot push into the mirror" bash -c "! '$CRANE' --insecure copy $R/hub/alpine:3.20 $R/hub/alpine:mine 2>$WORK/push.err && grep -q DENIED $WORK/push.err"
check "crane pushes a private image beside the mirror" "$CRANE" --insecure copy "$R/hub/alpine:3.20" "$R/team/app:v1"

echo "== containerd"
mkdir -p "$WORK/certs.d/docker.io"
cat >"$WORK/certs.d/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."http://$R"]
  capabilities = ["pull", "resolve"]
EOF
start_containerd "$WORK/containerd"
proxied_pulls() { curl -sf "$BERTH_URL/metrics" | awk '/^berth_proxy_(hits|misses)_total\{upstream="docker.io"/ {n += $NF} END {print n+0}'; }
PULLS_BEFORE=$(proxied_pulls)
check "containerd pulls docker.io/library/alpine by its original name via the hosts.toml mirror" \
  "${CTR[@]}" content fetch --hosts-dir "$WORK/certs.d" docker.io/library/alpine:3.20
check "containerd recorded the upstream's digest" \
  bash -c "${CTR[*]} images ls | grep 'docker.io/library/alpine:3.20' | grep -q '$MULTI'"
check "containerd's pulls came through Berth (the ns= mirror form)" test "$(proxied_pulls)" -gt "$PULLS_BEFORE"
check "Berth's catalog holds the mirrored and the private repository" \
  bash -c "[[ \$(curl -sf $BERTH_URL/v2/_catalog) == '{\"repositories\":[\"docker.io/library/alpine\",\"team/app\"]}' ]]"

echo "== a size limit evicts beside pulls"
# A second Berth whose cache holds at most 100 KiB: each maintenance pass (every 10 s) evicts the
# least recently pulled content, while skopeo keeps pulling both images. Every pull must come back
# whole, whether its blobs were cached, being evicted or fetched again.
cat >"$WORK/small.yaml" <<EOF
proxy:
  upstreams:
    - { name: docker.io, url: "http://$UP", default: true, include: ["library/**"], max_size: 100Ki }
EOF
start_berth --config "$WORK/small.yaml" || exit 1
R=$BERTH_ADDR
evictions() { curl -sf "$BERTH_URL/metrics" | awk '/^berth_proxy_evictions_total/ {n += $NF} END {print n+0}'; }
pulls_beside_evictions() {
  local i deadline=$((SECONDS + 60))
  for i in $(seq 1 40); do
    pull_layout "$R/library/alpine:3.20" "$WORK/ev1" "$MULTI" || return 1
    pull_layout "$R/library/alpine:multiarch" "$WORK/ev2" "$MULTIARCH" --all || return 1
    if [ "$(evictions)" -ge 2 ] && [ "$i" -ge 4 ]; then return 0; fi
    [ "$SECONDS" -lt "$deadline" ] || { echo "only $(evictions) evictions in 60 s"; return 1; }
    sleep 1
  done
  echo "only $(evictions) evictions after 40 rounds"
  return 1
}
check "skopeo pulls both images, whole, while the size limit evicts them" pulls_beside_evictions

finish
