#!/usr/bin/env bash
# Real registry clients against a fresh `berth`: skopeo, crane, oras, regctl and cosign push, pull,
# list, delete, sign and attach; digests must survive every round trip.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

CRANE=$(tool_path crane)
ORAS=$(tool_path oras)
REGCTL=$(tool_path regctl)
COSIGN=$(tool_path cosign)
require_tools "$CRANE" "$ORAS" "$REGCTL" "$COSIGN"
require_commands skopeo

start_berth
client_workspace
R=$BERTH_ADDR

sha256_of() { echo "sha256:$(sha256sum | cut -d' ' -f1)"; }

echo "== skopeo"
SK=(skopeo --insecure-policy)
skopeo_roundtrip() {
  local ref=$1 want=$2 all=${3:-}
  "${SK[@]}" copy $all --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:$ref" "docker://$R/clients/skopeo:$ref" &&
  equal "$("${SK[@]}" inspect --tls-verify=false --raw "docker://$R/clients/skopeo:$ref" | sha256_of)" "$want" &&
  rm -rf "$WORK/back-$ref" &&
  "${SK[@]}" copy $all --preserve-digests --src-tls-verify=false "docker://$R/clients/skopeo:$ref" "oci:$WORK/back-$ref:$ref" &&
  for blob in "$WORK/back-$ref"/blobs/sha256/*; do
    # every blob that came back is byte-identical to the one that went out
    cmp -s "$blob" "$WORK/layout/blobs/sha256/$(basename "$blob")" || { echo "blob $(basename "$blob") differs"; return 1; }
  done
}
check "skopeo copies a multi-layer image in and out, digests intact" skopeo_roundtrip multi "$MULTI"
check "skopeo copies a multi-arch index with all platforms" skopeo_roundtrip multiarch "$MULTIARCH" --all
check "skopeo lists tags" bash -c "'${SK[0]}' --insecure-policy list-tags --tls-verify=false docker://$R/clients/skopeo | grep -q multiarch"

echo "== crane"
C=("$CRANE" --insecure)
check "crane copies between repositories (mount)" "${C[@]}" copy "$R/clients/skopeo:multi" "$R/clients/crane:copied"
check "crane digest matches the source" bash -c "[[ \$('${CRANE}' --insecure digest $R/clients/crane:copied) == $MULTI ]]"
check "crane copies a whole index" "${C[@]}" copy "$R/clients/skopeo:multiarch" "$R/clients/crane:index"
check "crane resolves a platform from the index" bash -c "'${CRANE}' --insecure manifest --platform linux/arm64 $R/clients/crane:index | grep -q layers"
check "crane ls" bash -c "'${CRANE}' --insecure ls $R/clients/crane | sort | tr '\n' ' ' | grep -q 'copied index'"
check "crane catalog" bash -c "'${CRANE}' --insecure catalog $R | grep -qx clients/crane"
check "crane pulls an OCI layout" "${C[@]}" pull --format oci "$R/clients/crane:copied" "$WORK/crane-pulled"
check "crane tags and deletes by digest" bash -c "
  '${CRANE}' --insecure tag $R/clients/crane:copied extra &&
  '${CRANE}' --insecure delete $R/clients/crane@$MULTI &&
  ! '${CRANE}' --insecure manifest $R/clients/crane:copied 2>/dev/null &&
  ! '${CRANE}' --insecure ls $R/clients/crane | grep -qx extra"

echo "== oras"
O=("$ORAS")
printf 'hello from berth\n' >"$WORK/hello.txt"
check "oras pushes an artifact" bash -c "cd $WORK && '${ORAS}' push --plain-http $R/clients/oras:v1 --artifact-type application/vnd.berth.test hello.txt:text/plain"
check "oras pulls it back intact" bash -c "mkdir -p $WORK/oras-out && cd $WORK/oras-out && '${ORAS}' pull --plain-http $R/clients/oras:v1 && cmp hello.txt $WORK/hello.txt"
printf '{"spdxVersion":"SPDX-2.3","name":"berth-test"}\n' >"$WORK/sbom.spdx.json"
check "oras attaches an SBOM to an image" bash -c "cd $WORK && '${ORAS}' attach --plain-http --artifact-type application/spdx+json $R/clients/skopeo:multi sbom.spdx.json:application/spdx+json"
check "oras discovers the SBOM through the referrers API" bash -c "'${ORAS}' discover --plain-http --artifact-type application/spdx+json -o json $R/clients/skopeo:multi | grep -q application/spdx+json"
check "the referrers API lists it with its artifact type" bash -c "curl -sf '$BERTH_URL/v2/clients/skopeo/referrers/$MULTI?artifactType=application/spdx%2Bjson' | grep -q '\"artifactType\":\"application/spdx+json\"'"
check "oras lists tags" bash -c "'${ORAS}' repo tags --plain-http $R/clients/oras | grep -qx v1"

echo "== regctl"
export REGCTL_CONFIG=$WORK/regctl.json
"$REGCTL" registry set --tls disabled "$R" >/dev/null 2>&1
check "regctl copies an image" "$REGCTL" image copy "$R/clients/skopeo:multi" "$R/clients/regctl:v1"
check "regctl reads the manifest digest" bash -c "[[ \$('${REGCTL}' image digest $R/clients/regctl:v1) == $MULTI ]]"
check "regctl lists tags" bash -c "'${REGCTL}' tag ls $R/clients/regctl | grep -qx v1"
check "regctl fetches a blob with the right digest" bash -c "
  cfg=\$('${REGCTL}' manifest get --format '{{.Config.Digest}}' $R/clients/regctl:v1) &&
  [[ \$('${REGCTL}' blob get $R/clients/regctl \$cfg | sha256sum | cut -d' ' -f1) == \${cfg#sha256:} ]]"
check "regctl deletes a tag" bash -c "'${REGCTL}' tag delete $R/clients/regctl:v1 && ! '${REGCTL}' tag ls $R/clients/regctl | grep -qx v1"

echo "== cosign"
export COSIGN_PASSWORD=
(cd "$WORK" && "$COSIGN" generate-key-pair >/dev/null 2>&1)
IMG="$R/clients/skopeo@$MULTI"
COSIGN_FLAGS=(--allow-insecure-registry --allow-http-registry)
check "cosign signs with a local key, as an OCI 1.1 referrer" bash -c "
  COSIGN_EXPERIMENTAL=1 '${COSIGN}' sign --yes --key $WORK/cosign.key --tlog-upload=false \
    --registry-referrers-mode=oci-1-1 ${COSIGN_FLAGS[*]} $IMG"
check "cosign verifies the signature" bash -c "
  COSIGN_EXPERIMENTAL=1 '${COSIGN}' verify --key $WORK/cosign.pub --insecure-ignore-tlog \
    --experimental-oci11 ${COSIGN_FLAGS[*]} $IMG | grep -q critical"
check "the signature is listed by the referrers API" bash -c "curl -sf $BERTH_URL/v2/clients/skopeo/referrers/$MULTI | grep -q 'application/vnd.dev.cosign'"
check "a tampered key fails verification" bash -c "
  (cd $WORK && mkdir -p other && cd other && COSIGN_PASSWORD= '${COSIGN}' generate-key-pair >/dev/null 2>&1) &&
  ! COSIGN_EXPERIMENTAL=1 '${COSIGN}' verify --key $WORK/other/cosign.pub --insecure-ignore-tlog \
    --experimental-oci11 ${COSIGN_FLAGS[*]} $IMG >/dev/null 2>&1"

echo "== referrers a page at a time"
# A second berth whose referrers pages hold about 2 KiB, so 40 referrers take several pages.
printf 'limits:\n  referrers_page_bytes: 2048\n' >"$WORK/paged.yml"
start_berth --config "$WORK/paged.yml"
P=$BERTH_ADDR
"$REGCTL" registry set --tls disabled "$P" >/dev/null 2>&1
paged_subject() {
  "${SK[@]}" copy --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:multi" "docker://$P/clients/paged:v1" &&
  size=$(curl -sfI "http://$P/v2/clients/paged/manifests/$MULTI" | tr -d '\r' | awk -F': ' 'tolower($1)=="content-length" {print $2}') &&
  python3 "$ROOT/tests/push_many.py" "http://$P" clients/paged 0 40 "$WORK/paged-acked" "$MULTI" "$size"
}
check "40 referrers pushed onto an image" paged_subject
check "the first page holds some of them and links to the next" bash -c "
  page=\$(curl -sfi http://$P/v2/clients/paged/referrers/$MULTI) &&
  grep -qi '^link: </v2/clients/paged/referrers/$MULTI?last=sha256' <<<\"\$page\" &&
  (( \$(grep -o 'vnd.berth.test.note' <<<\"\$page\" | wc -l) < 40 ))"
check "oras discovers all 40 across the pages" bash -c "
  [[ \$('${ORAS}' discover --plain-http -o json $P/clients/paged@$MULTI | grep -o 'vnd.berth.test.note' | wc -l) == 40 ]]"
check "regctl lists all 40 across the pages" bash -c "
  [[ \$('${REGCTL}' artifact list --format '{{len .Descriptors}}' $P/clients/paged@$MULTI) == 40 ]]"

finish
