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
require_tools "$CRANE" "$ORAS" "$COSIGN" "$DISTRIBUTION"
require_commands skopeo

client_workspace
htpasswd_users alice
printf 'alice-pw' >"$WORK/alice.pw"
cat >"$WORK/source.yml" <<YAML
auth:
  htpasswd: $WORK/htpasswd
  rules: [{ users: [alice], repositories: ["**"], actions: [pull, push] }]
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
again_sends_nothing() {
  replicate "$A" "$D" --from-username alice --from-password-file "$WORK/alice.pw" src/app &&
    report 'r["bytesCopied"] == 0 and r["manifestsCopied"] == 0 and {i["outcome"] for i in r["images"]} == {"unchanged"}'
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
check "a second run sends no bytes" again_sends_nothing
check "from Distribution to a second berth, referrers through its API" to_second_berth
check "the second berth has the same digests" same_digests "$B"
check "there too, cosign verifies and oras discovers the SBOM" verifies "$B"
check "tag filters choose, and a dry run writes nothing" tag_filters_and_dry_run
check "a whole registry through its catalog, through repository globs" whole_registry
check "a source that wants a login refuses a replication without one" refused_without_login

finish
