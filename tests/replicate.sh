#!/usr/bin/env bash
# `berth replicate` between real registries: from a Berth that wants a login (tokens), to CNCF
# Distribution (no referrers API: the tag scheme), and back to a second Berth. A multi-arch image
# with a cosign signature and an SBOM attached by oras keeps every digest, and the signature
# verifies and the SBOM is discovered at each end. A second run sends nothing.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

CRANE=$(tool_path crane)
ORAS=$(tool_path oras)
COSIGN=$(tool_path cosign)
DISTRIBUTION=$(tool_path registry)
require_tools "$CRANE" "$ORAS" "$COSIGN" "$DISTRIBUTION" "$(tool_path minio)"
require_commands skopeo

client_workspace
htpasswd_users alice
printf 'alice-pw' >"$WORK/alice.pw"
cat >"$WORK/source.yml" <<YAML
auth:
  htpasswd: $WORK/htpasswd
  rules: [{ users: [alice], repositories: ["**"], actions: [pull, push, delete] }]
YAML
start_berth --config "$WORK/source.yml"
A=$BERTH_ADDR
start_berth
B=$BERTH_ADDR
start_distribution "$DISTRIBUTION" || exit 1
D=$DIST_ADDR

SK=(skopeo --insecure-policy)
export COSIGN_PASSWORD= COSIGN_EXPERIMENTAL=1
COSIGN_FLAGS=(--allow-insecure-registry --allow-http-registry)
replicate() { # replicate FROM TO [args...]: berth replicate, the JSON report in $WORK/report.json
  local from=$1 to=$2
  shift 2
  "$BERTH_BIN" replicate --from "http://$from" --to "http://$to" --output json "$@" >"$WORK/report.json"
}
report() { python3 -c "import json,sys; r = json.load(open('$WORK/report.json')); assert $1, r"; }

source_ready() {
  "$CRANE" auth login "$A" -u alice -p alice-pw >/dev/null 2>&1 &&
    "${SK[@]}" copy -q --all --preserve-digests --dest-tls-verify=false --dest-creds alice:alice-pw "oci:$WORK/layout:multiarch" "docker://$A/src/app:multiarch" &&
    "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false --dest-creds alice:alice-pw "oci:$WORK/layout:multi" "docker://$A/src/app:v1" &&
    (cd "$WORK" && "$COSIGN" generate-key-pair >/dev/null 2>&1) &&
    "$COSIGN" sign --yes --key "$WORK/cosign.key" --tlog-upload=false --registry-referrers-mode=oci-1-1 \
      "${COSIGN_FLAGS[@]}" "$A/src/app@$MULTI" >/dev/null 2>&1 &&
    echo '{"spdxVersion":"SPDX-2.3"}' >"$WORK/sbom.spdx.json" &&
    (cd "$WORK" && "$ORAS" attach --plain-http -u alice -p alice-pw --artifact-type application/spdx+json \
      "$A/src/app:multiarch" sbom.spdx.json:application/spdx+json >/dev/null)
}
same_digests() { # same_digests REGISTRY: both tags name the source's digests there
  equal "$("$CRANE" --insecure digest "$1/src/app:multiarch")" "$MULTIARCH" &&
    equal "$("$CRANE" --insecure digest "$1/src/app:v1")" "$MULTI"
}
verifies() { # verifies REGISTRY: the signature checks with the original key, the SBOM is found
  "$COSIGN" verify --key "$WORK/cosign.pub" --insecure-ignore-tlog --experimental-oci11 "${COSIGN_FLAGS[@]}" \
    "$1/src/app@$MULTI" >/dev/null 2>&1 &&
    "$ORAS" discover --plain-http --artifact-type application/spdx+json -o json "$1/src/app:multiarch" |
    grep -q application/spdx+json
}
to_distribution() {
  replicate "$A" "$D" --from-username alice --from-password-file "$WORK/alice.pw" src/app &&
    report 'len(r["images"]) == 2 and r["referrersCopied"] == 2 and r["bytesCopied"] > 0 and not r["failed"]'
}
# manifest_gets REGISTRY: the manifest GETs it has answered.
manifest_gets() { curl -fsS "http://$1/metrics" | awk '/^berth_http_requests_total\{endpoint="manifest",method="GET"/ {s += $2} END {print s + 0}'; }
again_sends_nothing() {
  local gets
  gets=$(manifest_gets "$A") &&
    replicate "$A" "$D" --from-username alice --from-password-file "$WORK/alice.pw" src/app &&
    report 'r["bytesCopied"] == 0 and r["manifestsCopied"] == 0 and {i["outcome"] for i in r["images"]} == {"unchanged"}' &&
    equal "$(manifest_gets "$A")" "$gets"
}
to_second_berth() {
  replicate "$D" "$B" src/app && report 'r["referrersCopied"] == 2 and not r["failed"]' &&
    curl -sf "http://$B/v2/src/app/referrers/$MULTI" | grep -q application/vnd.dev.cosign
}
tag_filters_and_dry_run() {
  replicate "$A" "$B" --from-username alice --from-password-file "$WORK/alice.pw" --tag 'v*' --dry-run src/app &&
    report '[(i["reference"], i["outcome"]) for i in r["images"]] == [("v1", "unchanged")]' &&
    "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false --dest-creds alice:alice-pw "oci:$WORK/layout:multi" "docker://$A/src/new:v2" &&
    replicate "$A" "$B" --from-username alice --from-password-file "$WORK/alice.pw" --dry-run src/new &&
    report '[i["outcome"] for i in r["images"]] == ["wouldCopy"] and r["dryRun"]' &&
    ! "$CRANE" --insecure digest "$B/src/new:v2" >/dev/null 2>&1
}
whole_registry() {
  replicate "$A" "$B" --from-username alice --from-password-file "$WORK/alice.pw" --all --repository 'src/n*' &&
    report '[(i["repository"], i["reference"], i["outcome"]) for i in r["images"]] == [("src/new", "v2", "copied")]' &&
    equal "$("$CRANE" --insecure digest "$B/src/new:v2")" "$MULTI"
}
refused_without_login() {
  ! replicate "$A" "$B" src/app 2>"$WORK/refused.err" && grep -qi "credentials\|unauthorized\|denied" "$WORK/refused.err" "$WORK/report.json"
}
check "the source holds a multi-arch image, a cosign signature and an SBOM" source_ready
check "berth replicates it to CNCF Distribution, signature and SBOM included" to_distribution
check "Distribution has the same digests" same_digests "$D"
check "there, cosign verifies and oras discovers the SBOM (tag scheme)" verifies "$D"
check "a second run sends no bytes, and GETs no manifest at the source" again_sends_nothing
check "from Distribution to a second berth, referrers through its API" to_second_berth
check "the second berth has the same digests" same_digests "$B"
check "there too, cosign verifies and oras discovers the SBOM" verifies "$B"
check "tag filters choose, and a dry run writes nothing" tag_filters_and_dry_run
check "a whole registry through its catalog, through repository globs" whole_registry
check "a source that wants a login refuses a replication without one" refused_without_login
from_authfile() {
  printf '{"auths": {"https://%s/v2/": {"auth": "%s"}}}' "$A" "$(printf alice:alice-pw | base64)" >"$WORK/config.json" &&
    replicate "$A" "$B" --from-authfile "$WORK/config.json" --tag v1 src/app &&
    report 'not r["failed"] and [i["reference"] for i in r["images"]] == ["v1"]'
}
check "credentials from a docker config.json's auths" from_authfile
from_helper() {
  mkdir -p "$WORK/helper" &&
    cat >"$WORK/helper/docker-credential-berthtest" <<SH &&
#!/bin/sh
read -r server
[ "\$server" = "$A" ] || { echo "credentials not found in native keychain"; exit 1; }
echo '{"ServerURL": "$A", "Username": "alice", "Secret": "alice-pw"}'
SH
    chmod +x "$WORK/helper/docker-credential-berthtest" &&
    printf '{"credHelpers": {"%s": "berthtest"}}' "$A" >"$WORK/helped.json" &&
    PATH="$WORK/helper:$PATH" replicate "$A" "$B" --authfile "$WORK/helped.json" --tag v1 src/app &&
    report 'not r["failed"] and [i["reference"] for i in r["images"]] == ["v1"]'
}
check "credentials from the credential helper a config names" from_helper
child_signed_later() {
  local child
  child=$("$CRANE" --insecure manifest "$A/src/app@$MULTIARCH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])') &&
    "$COSIGN" sign --yes --key "$WORK/cosign.key" --tlog-upload=false --registry-referrers-mode=oci-1-1 \
      "${COSIGN_FLAGS[@]}" "$A/src/app@$child" >/dev/null 2>&1 &&
    replicate "$A" "$B" --from-username alice --from-password-file "$WORK/alice.pw" --tag multiarch src/app &&
    report '[i["outcome"] for i in r["images"]] == ["unchanged"] and r["referrersCopied"] == 1' &&
    curl -fsS "http://$B/v2/src/app/referrers/$child" | grep -q application/vnd.dev.cosign
}
check "a signature made later on a child of an unchanged index follows it" child_signed_later

echo "== tag filters, overwrites and deletes"
start_berth
C=$BERTH_ADDR
AUTH=(--from-username alice --from-password-file "$WORK/alice.pw")
tags_at() { curl -fsS "http://$1/v2/rules/app/tags/list" | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["tags"])))'; }
rules_source() {
  "$CRANE" --insecure copy "$A/src/app:v1" "$A/rules/app:1.0.0" >/dev/null 2>&1 &&
    for t in v1.2 2.0.0 pr-7 1.3.0-debug; do "$CRANE" --insecure tag "$A/rules/app:1.0.0" "$t" >/dev/null 2>&1 || return 1; done &&
    "$CRANE" --insecure copy "$A/src/app:multiarch" "$A/rules/app:latest" >/dev/null 2>&1
}
check "the source has rules/app tagged 1.0.0 v1.2 2.0.0 pr-7 1.3.0-debug latest" rules_source
# filter_case NAME EXPECTED ARGS...: a dry run from A to B chooses exactly EXPECTED (sorted tags).
filter_case() {
  local expected=$1
  shift
  replicate "$A" "$B" "${AUTH[@]}" --dry-run "$@" rules/app &&
    equal "$(python3 -c "import json; print(' '.join(sorted(i['reference'] for i in json.load(open('$WORK/report.json'))['images'])))")" "$expected"
}
check "--semver '>=1.2, <2' takes v1.2 (pre-releases and 2.0.0 out)" filter_case "v1.2" --semver '>=1.2, <2'
check "--tag-regex with --tag: either matches" filter_case "latest pr-7" --tag-regex 'pr-[0-9]+' --tag latest
check "--exclude-tag-regex leaves out what --tag took" filter_case "1.0.0" --tag '1.*' --exclude-tag-regex '.*-debug'
check "a bad regex is refused before anything is copied" \
  bash -c "'$BERTH_BIN' replicate --from http://$A --to http://$B --tag-regex '(' rules/app 2>&1 | grep -q 'tag regex'"
copy_all() {
  replicate "$A" "$B" "${AUTH[@]}" rules/app && "$CRANE" --insecure tag "$B/rules/app:latest" nightly >/dev/null 2>&1 &&
    replicate "$B" "$C" rules/app && equal "$(tags_at "$C")" "$(tags_at "$B")"
}
check "rules/app copied whole to B, then (tagged nightly there too) to C" copy_all
"$CRANE" --insecure tag "$B/rules/app:1.0.0" latest >/dev/null 2>&1
curl -fsS -X DELETE "http://$B/v2/rules/app/manifests/pr-7" -o /dev/null
no_overwrite() {
  replicate "$B" "$C" --no-overwrite rules/app &&
    report '[i["reference"] for i in r["images"] if i["outcome"] == "kept"] == ["latest"]' &&
    equal "$("$CRANE" --insecure digest "$C/rules/app:latest")" "$MULTIARCH" &&
    [[ $(tags_at "$C") == *pr-7* ]]
}
check "--no-overwrite keeps C's latest, and by default nothing is deleted" no_overwrite
delete_tags() {
  replicate "$B" "$C" --delete tags --dry-run rules/app &&
    report '[i["reference"] for i in r["images"] if i["outcome"] == "wouldDelete"] == ["pr-7"]' &&
    [[ $(tags_at "$C") == *pr-7* ]] &&
    replicate "$B" "$C" --delete tags rules/app &&
    report '[i["reference"] for i in r["images"] if i["outcome"] == "deleted"] == ["pr-7"] and r["manifestsDeleted"] == 0' &&
    equal "$(tags_at "$C")" "$(tags_at "$B")" &&
    equal "$("$CRANE" --insecure digest "$C/rules/app:latest")" "$MULTI"
}
check "--delete tags: pr-7 goes (a dry run first only says so), latest moves" delete_tags
curl -fsS -X DELETE "http://$B/v2/rules/app/manifests/nightly" -o /dev/null
mirror() {
  replicate "$B" "$C" --delete mirror rules/app &&
    report '[i["reference"] for i in r["images"] if i["outcome"] == "deleted"] == ["nightly"] and r["manifestsDeleted"] == 1' &&
    equal "$(tags_at "$C")" "$(tags_at "$B")" &&
    equal "$(curl -s -o /dev/null -w '%{http_code}' -I "http://$C/v2/rules/app/manifests/$MULTIARCH")" 404 &&
    ! "$BERTH_BIN" replicate --from "http://$B" --to "http://$C" --delete mirror --no-overwrite rules/app 2>/dev/null
}
check "--delete mirror: nightly goes with the index only it named" mirror
PREFIXED=(--all --from-prefix src --to-prefix mirror/hub/ --no-referrers)
prefixed() {
  replicate "$A" "$C" "${AUTH[@]}" "${PREFIXED[@]}" &&
    report 'not r["failed"] and r["referrersCopied"] == 0 and {i["repository"] for i in r["images"]} == {"src/app", "src/new"}' &&
    equal "$("$CRANE" --insecure digest "$C/mirror/hub/app:multiarch")" "$MULTIARCH" &&
    equal "$("$CRANE" --insecure digest "$C/mirror/hub/new:v2")" "$MULTI" &&
    curl -fsS "http://$C/v2/mirror/hub/app/referrers/$MULTI" >"$WORK/referrers.json" &&
    ! grep -q application/vnd.dev.cosign "$WORK/referrers.json" &&
    replicate "$A" "$C" "${AUTH[@]}" "${PREFIXED[@]}" &&
    report 'r["bytesCopied"] == 0 and r["manifestsCopied"] == 0 and not r["failed"]'
}
check "--from-prefix src --to-prefix mirror/hub: src/app lands as mirror/hub/app, referrers left behind" prefixed

echo "== a hostile source"
HOSTILE=127.0.0.1:$(free_port)
python3 "$ROOT/tests/hostile_registry.py" "${HOSTILE#*:}" >"$WORK/hostile.log" 2>&1 &
on_exit "kill $!"
wait_for "http://$HOSTILE/v2/" 20
# hostile SPEC: a replication from the hostile source, bounded in time; its stderr in hostile.err.
hostile() { timeout 120 "$BERTH_BIN" replicate --from "http://$HOSTILE" --to "http://$B" "$1" 2>"$WORK/hostile.err"; }
endless_manifest() { ! hostile endless/app:v1 && grep -q "larger than the 4194304 bytes accepted" "$WORK/hostile.err"; }
check "a manifest without end is refused past 4 MiB, not read into memory" endless_manifest
endless_listing() { ! hostile loop/app && grep -q "does not move past" "$WORK/hostile.err"; }
check "a tag list that ignores \`last\` is refused, not asked for again for ever" endless_listing

echo "== a run killed in the middle, started again"
# An image of 8 random 1 MiB layers at B; the copy to a fresh E is paced to 2 MiB/s and killed
# once E has received 5 MiB of it (4 layers whole). The second run sends only what had not arrived.
big_image() {
  python3 - "http://$B" <<'PY'
import hashlib, json, os, sys, urllib.request
url = sys.argv[1]
def put(path, data, ctype):
    req = urllib.request.Request(url + path, data=data, method="PUT" if "manifests" in path else "POST",
                                 headers={"Content-Type": ctype})
    urllib.request.urlopen(req, timeout=60).read()
def blob(data, media):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    put(f"/v2/big/app/blobs/uploads/?digest={d}", data, "application/octet-stream")
    return {"mediaType": media, "digest": d, "size": len(data)}
config = blob(b'{"architecture":"amd64","os":"linux"}', "application/vnd.oci.image.config.v1+json")
layers = [blob(os.urandom(1 << 20), "application/vnd.oci.image.layer.v1.tar") for _ in range(8)]
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": layers}
put("/v2/big/app/manifests/v1", json.dumps(m).encode(), "application/vnd.oci.image.manifest.v1+json")
PY
}
check "B holds big/app:v1, 8 MiB in 8 layers" big_image
start_berth
E=$BERTH_ADDR
received() { curl -fsS "http://$E/metrics" | awk '/^berth_http_received_bytes_total/ {s += $2} END {printf "%d\n", s}'; }
resumed() {
  local before after first_run deadline=$((SECONDS + 60))
  before=$(received)
  "$BERTH_BIN" replicate --from "http://$B" --to "http://$E" --bandwidth 2MiB --jobs 1 --progress json big/app:v1 \
    >/dev/null 2>"$WORK/progress.jsonl" &
  local pid=$!
  while (($(received) - before < 5 * 1048576 && SECONDS < deadline)); do sleep 0.1; done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  first_run=$(($(received) - before))
  replicate "$B" "$E" big/app:v1 || return 1
  after=$(received)
  echo "first run: $first_run bytes on the wire; whole: $((after - before))"
  report 'r["blobsSkipped"] >= 1 and r["bytesCopied"] < 8 * 1048576 and [i["outcome"] for i in r["images"]] == ["copied"]' &&
    equal "$("$CRANE" --insecure digest "$E/big/app:v1")" "$("$CRANE" --insecure digest "$B/big/app:v1")" &&
    # What arrived whole is not sent again: at most the blobs in flight at the kill (4 at once).
    ((after - before < 12 * 1048576 + 65536))
}
check "the second run skips the blobs that arrived, and the image is whole" resumed
progress_lines() {
  python3 - "$WORK/progress.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
sent = [l["bytesSent"] for l in lines]
assert lines and sent == sorted(sent) and sent[-1] > 0, lines
assert all(l["imagesFound"] == 1 for l in lines), lines
print(len(lines), "lines, up to", sent[-1], "bytes")
PY
}
check "the paced run showed its progress as JSON lines, bytes sent growing" progress_lines

echo "== a platform subset keeps the index's digest"
printf 'sparse_indexes: true\n' >"$WORK/sparse.yml"
start_berth --config "$WORK/sparse.yml"
F=$BERTH_ADDR
child() { # child PLATFORM-ARCH: the multi-arch index's child for linux/ARCH
  "$CRANE" --insecure manifest "$A/src/app:multiarch" 2>/dev/null |
    python3 -c "import json,sys; print([m['digest'] for m in json.load(sys.stdin)['manifests'] if m['platform']['architecture'] == '$1'][0])"
}
platform_subset() {
  "$CRANE" auth login "$A" -u alice -p alice-pw >/dev/null 2>&1
  replicate "$A" "$F" "${AUTH[@]}" --platform linux/amd64 src/app:multiarch &&
    report 'not r["failed"] and r["manifestsLeftOut"] == 1' &&
    equal "$("$CRANE" --insecure digest "$F/src/app:multiarch")" "$MULTIARCH" &&
    equal "$(curl -s -o /dev/null -w '%{http_code}' -I "http://$F/v2/src/app/manifests/$(child amd64)")" 200 &&
    equal "$(curl -s -o /dev/null -w '%{http_code}' -I "http://$F/v2/src/app/manifests/$(child arm64)")" 404
}
check "--platform linux/amd64: the index's digest stays, only the amd64 child is copied" platform_subset
sparse_refused() {
  ! replicate "$A" "$E" "${AUTH[@]}" --platform linux/amd64 src/app:multiarch &&
    report 'r["failed"] and "unknown" in r["failed"][0]["error"].lower()'
}
check "a destination that wants every child refuses the sparse index, and says so" sparse_refused

echo "== replication on push"
# P copies its pushes of team/** tags v* or release-<n> to F, a Berth that wants a login. F is down
# at first: the copies wait in P's event log and arrive once F is up.
F=127.0.0.1:$(free_port)
mkdir -p "$WORK/edge-creds" "$WORK/f"
printf 'alice\n' >"$WORK/edge-creds/username"
printf 'alice-pw\n' >"$WORK/edge-creds/password"
cat >"$WORK/on-push.yml" <<YAML
replication:
  on_push:
    - name: edge
      destination: http://$F
      credentials_dir: $WORK/edge-creds
      repositories: ["team/**"]
      tags: ["v*", "re:^release-[0-9]+\$"]
      backoff: 1s
    - name: renamed
      destination: http://$F
      credentials_dir: $WORK/edge-creds
      source_prefix: team
      destination_prefix: copies
      tags: ["v*"]
      referrers: false
      deletes: tags
      backoff: 1s
YAML
# Failed attempts, with their errors, are logged at debug.
start_berth --config "$WORK/on-push.yml" --log-level info,berth_registry::notify=debug
P=$BERTH_ADDR
P_LOG=$BERTH_DIR/log
copies() { curl -fsS "http://$P/metrics" | awk -v o="outcome=\"$1\"" 'index($0, "berth_replication_copies_total") == 1 && index($0, o) {s += $2} END {printf "%d\n", s}'; }
at_f() { "$CRANE" --insecure digest "$F/$1" 2>/dev/null; }
pushed_while_down() {
  "${SK[@]}" copy -q --all --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:multiarch" "docker://$P/team/app:v1" &&
    "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$P/team/app:latest" &&
    "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$P/other/app:v1" &&
    "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$P/team/app:v2" &&
    curl -fsS -o /dev/null -X DELETE "http://$P/v2/team/app/manifests/v2" &&
    eventually 20 bash -c "(( \$(curl -fsS http://$P/metrics | grep -c '^berth_replication_copies_total.*outcome=\"failed\"') > 0 ))"
}
check "pushes while the destination is down: P tries, and keeps them" pushed_while_down
"$BERTH_BIN" serve --listen "$F" --data-dir "$WORK/f/data" --config "$WORK/source.yml" >"$WORK/f/log" 2>&1 &
on_exit "kill $!"
wait_for "http://$F/v2/" 20
"$CRANE" auth login "$F" -u alice -p alice-pw >/dev/null 2>&1
check "once it is up, the tag that matches arrives, with the multi-arch index's digest" \
  eventually 60 bash -c "[[ \$('$CRANE' --insecure digest '$F/team/app:v1' 2>/dev/null) == $MULTIARCH ]]"
not_copied() {
  ! at_f team/app:latest >/dev/null && ! at_f other/app:v1 >/dev/null && ! at_f team/app:v2 >/dev/null &&
    (($(copies dead) == 0)) &&
    eventually 60 bash -c "curl -fsS http://$P/metrics | grep -qx 'berth_replication_pending{policy=\"edge\"} 0'"
}
check "a tag outside the filter, a repository outside the globs and a tag deleted since are not copied" not_copied
signed_later() {
  "$COSIGN" sign --yes --key "$WORK/cosign.key" --tlog-upload=false --registry-referrers-mode=oci-1-1 \
    "${COSIGN_FLAGS[@]}" "$P/team/app@$MULTIARCH" >/dev/null 2>&1 &&
    eventually 60 bash -c "curl -fsS -u alice:alice-pw http://$F/v2/team/app/referrers/$MULTIARCH | grep -q application/vnd.dev.cosign" &&
    "$COSIGN" verify --key "$WORK/cosign.pub" --insecure-ignore-tlog --experimental-oci11 "${COSIGN_FLAGS[@]}" \
      "$F/team/app@$MULTIARCH" >/dev/null 2>&1
}
check "a signature made later follows its image, and verifies there" signed_later
moved_and_released() {
  "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$P/team/app:v1" &&
    "${SK[@]}" copy -q --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$P/team/app:release-7" &&
    eventually 60 bash -c "[[ \$('$CRANE' --insecure digest '$F/team/app:v1' 2>/dev/null) == $MULTI && \$('$CRANE' --insecure digest '$F/team/app:release-7' 2>/dev/null) == $MULTI ]]"
}
check "a tag moved at P moves at F; a tag the regex matches is copied" moved_and_released
renamed_without_referrers() {
  eventually 60 bash -c "[[ \$('$CRANE' --insecure digest '$F/copies/app:v1' 2>/dev/null) == $MULTI ]]" &&
    eventually 60 bash -c "curl -fsS http://$P/metrics | grep -qx 'berth_replication_pending{policy=\"renamed\"} 0'" &&
    equal "$("$CRANE" --insecure digest "$F/copies/app@$MULTIARCH")" "$MULTIARCH" &&
    curl -fsS -u alice:alice-pw "http://$F/v2/copies/app/referrers/$MULTIARCH" >"$WORK/referrers.json" &&
    ! grep -q application/vnd.dev.cosign "$WORK/referrers.json" && ! at_f copies/app:release-7 >/dev/null
}
check "source_prefix team, destination_prefix copies: team/app lands as copies/app, its signature left behind" \
  renamed_without_referrers
deletes_follow() {
  curl -fsS -o /dev/null -X DELETE "http://$P/v2/team/app/manifests/v1" &&
    eventually 60 bash -c "! '$CRANE' --insecure digest '$F/copies/app:v1' >/dev/null 2>&1" &&
    (($(copies deleted) >= 1)) && equal "$(at_f team/app:v1)" "$MULTI"
}
check "deletes: tags: a tag deleted at P goes at F (only under the policy that says so)" deletes_follow

# nested HOST REPO TAG N: a manifest under N indexes, each the only child of the next, the
# outermost tagged TAG — what any user who may push can make. Each chain is its own (TAG is in
# every level), so a copy finds none of it at the destination.
nested() {
  python3 - "$@" <<'PY'
import hashlib, json, sys, urllib.request
host, repo, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def put(path, body, media_type, method="PUT"):
    req = urllib.request.Request(f"http://{host}/v2/{repo}/{path}", data=body, method=method,
                                 headers={"Content-Type": media_type})
    urllib.request.urlopen(req).read()
config = b"{}"
put(f"blobs/uploads/?digest=sha256:{hashlib.sha256(config).hexdigest()}", config, "application/octet-stream", "POST")
media_type = "application/vnd.oci.image.manifest.v1+json"
body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "layers": [], "annotations": {"chain": tag}, "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": f"sha256:{hashlib.sha256(config).hexdigest()}", "size": len(config)}}).encode()
for level in range(n + 1):
    digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    put(f"manifests/{tag if level == n else digest}", body, media_type)
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "annotations": {"chain": tag},
                       "manifests": [{"mediaType": media_type, "digest": digest, "size": len(body)}]}).encode()
    media_type = "application/vnd.oci.image.index.v1+json"
PY
}
too_deep_on_push() {
  nested "$P" team/deep v-deep 40 &&
    eventually 60 grep -q 'nested more than 32 levels' "$P_LOG" &&
    curl -fsS -o /dev/null "http://$P/v2/"
}
check "an image nested too deep fails its copy on push, and says so; P keeps serving" too_deep_on_push

echo "== moving house: a registry on the filesystem copied whole onto S3 and PostgreSQL"
catalog() { # catalog URL [curl args...]: the repository names, sorted, one line
  local url=$1
  shift
  curl -fsS "$@" "$url/v2/_catalog" | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["repositories"])))'
}
start_minio "$WORK/minio" || { tail -n 20 "$WORK/minio/minio.log"; check "MinIO starts" false; }
start_postgres || check "PostgreSQL starts" false
"${PSQL[@]}" -c "CREATE DATABASE berth" >/dev/null
curl -sS -f -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$MINIO_USER:$MINIO_PASSWORD" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$MINIO_URL/moved"
mkdir -p "$WORK/s3"
printf '%s\n' "$MINIO_USER" >"$WORK/s3/accessKeyId"
printf '%s\n' "$MINIO_PASSWORD" >"$WORK/s3/secretAccessKey"
cat >"$WORK/moved.yml" <<YAML
storage: {kind: s3, bucket: moved, endpoint: "$MINIO_URL", path_style: true, credentials_dir: "$WORK/s3"}
metadata: {kind: postgres, max_connections: 8}
YAML
export BERTH_POSTGRES_URL=${PG_URL%/postgres}/berth
start_berth --config "$WORK/moved.yml" || { cat "$BERTH_DIR/log"; check "the new home starts" false; }
M=$BERTH_ADDR
moving_house() {
  replicate "$A" "$M" "${AUTH[@]}" --all &&
    report 'not r["failed"] and r["referrersCopied"] >= 2' &&
    equal "$(catalog "http://$M")" "$(catalog "http://$A" -u alice:alice-pw)"
}
check "berth replicate --all moves every repository of A onto S3 + PostgreSQL" moving_house
check "the new home has the same digests" same_digests "$M"
check "and there cosign verifies and oras discovers the SBOM (referrers API)" verifies "$M"

# An index that names its child by a sha512 digest (the spec allows it; berth takes it).
sha512_child() {
  local dir=$WORK/sha512 b=http://$B/v2/sha512/app config layer manifest index child
  mkdir -p "$dir" && printf '{}' >"$dir/config" && printf 'sha512 layer' >"$dir/layer" &&
    config=sha256:$(sha256sum "$dir/config" | cut -d' ' -f1) && layer=sha256:$(sha256sum "$dir/layer" | cut -d' ' -f1) &&
    curl -fsS -X POST --data-binary @"$dir/config" "$b/blobs/uploads/?digest=$config" -o /dev/null &&
    curl -fsS -X POST --data-binary @"$dir/layer" "$b/blobs/uploads/?digest=$layer" -o /dev/null &&
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":12}]}' \
      "$config" "$layer" >"$dir/manifest" &&
    child=sha512:$(sha512sum "$dir/manifest" | cut -d' ' -f1) &&
    curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$dir/manifest" "$b/manifests/$child" -o /dev/null &&
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,"platform":{"os":"linux","architecture":"amd64"}}]}' \
      "$child" "$(stat -c %s "$dir/manifest")" >"$dir/index" &&
    curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.index.v1+json' --data-binary @"$dir/index" "$b/manifests/v1" -o /dev/null &&
    replicate "$B" "$C" sha512/app && report 'not r["failed"]' &&
    equal "$(curl -fsS "http://$C/v2/sha512/app/manifests/$child" | sha512sum | cut -d' ' -f1)" "${child#sha512:}" &&
    equal "$(curl -fsS "http://$C/v2/sha512/app/manifests/v1" | sha256sum)" "$(sha256sum <"$dir/index")"
}
check "an index whose child is named by sha512 is copied with that digest" sha512_child

# Each level of an index's children (and of referrers of referrers) is a nested call of the copy:
# a chain of 3,000 indexes overflowed a thread's stack and aborted the process. A copy follows
# 32 levels and refuses more with a message.
depth_bound() {
  local manifest=(-H 'Accept: application/vnd.oci.image.index.v1+json')
  nested "$B" deep/app v32 32 && replicate "$B" "$C" deep/app:v32 && report 'not r["failed"]' &&
    equal "$(curl -fsS "${manifest[@]}" "http://$C/v2/deep/app/manifests/v32" | sha256sum)" \
      "$(curl -fsS "${manifest[@]}" "http://$B/v2/deep/app/manifests/v32" | sha256sum)" &&
    nested "$B" deep/app v33 33 && ! replicate "$B" "$C" deep/app:v33 &&
    report 'r["failed"] and "nested more than 32 levels" in r["failed"][0]["error"]'
}
check "an image 32 levels deep is copied; one a level deeper fails with a message" depth_bound

finish
