#!/usr/bin/env bash
# The OCI distribution-spec conformance suites against a fresh `berth`, every workflow enabled:
# the Ginkgo suite of the v1.1 release line, and the current suite of the spec's main branch.
#   tests/conformance.sh [berth serve args...]   (tests/s3.sh passes a config with S3 storage)
# BLOBS_DIGEST_HEADER=false leaves out the one check a blob redirect cannot pass: the store that
# serves the presigned URL sends no Docker-Content-Digest (berth's 307 does).
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

CONFORMANCE=$(tool_path conformance)
CONFORMANCE_MAIN=$(tool_path conformance-main)
require_tools "$CONFORMANCE" "$CONFORMANCE_MAIN"

# The v1.1 release-line suite (Ginkgo): workflows switched on by OCI_TEST_*.
run_release_suite() {
  local report=$1
  shift
  mkdir -p "$report"
  (cd "$report" && env "$@" \
    OCI_ROOT_URL="$BERTH_URL" OCI_NAMESPACE=conformance/main/repo OCI_CROSSMOUNT_NAMESPACE=conformance/other \
    OCI_TEST_PULL=1 OCI_TEST_PUSH=1 OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1 \
    OCI_HIDE_SKIPPED_WORKFLOWS=0 OCI_REPORT_DIR="$report" "$CONFORMANCE" -test.v) >"$report/output.txt" 2>&1
  local rc=$?
  grep -aE 'Passed|Failed|\[FAIL\]' "$report/output.txt" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 12
  ((rc == 0)) || why_it_failed "$report/output.txt"
  return $rc
}

# why_it_failed OUTPUT: what the suite expected and got in its first failure, and what berth logged
# last, so a failure in CI can be understood from its log alone.
why_it_failed() {
  echo "first failure:"
  sed 's/\x1b\[[0-9;]*m//g' "$1" | awk '/\[(FAILED|PANICKED)\]/ && !n++ {p=1} p && /^-----/ {exit} p' | head -n 30
  echo "berth's log, last lines:"
  tail -n 20 "$BERTH_DIR/log"
}

# The main-branch suite, with every API and data set on that the suite defines, the optional ones
# included (digest headers, upload cancel, tag parameters, anonymous mount, sha512, the empty
# blob). The one data set left off is "sparse" (manifests whose references were never pushed):
# berth verifies every reference and answers MANIFEST_BLOB_UNKNOWN, as the spec allows and as
# its own tests require. A feature the suite finds missing is reported as "Skip"; none may be.
run_main_suite() {
  local report=$1
  mkdir -p "$report"
  (cd "$report" && env OCI_REGISTRY="${BERTH_URL#http://}" OCI_TLS=disabled OCI_VERSION=1.1 \
    OCI_REPO1=conformance/main/repo1 OCI_REPO2=conformance/main/repo2 OCI_RESULTS_DIR="$report/results" \
    OCI_API_PULL=true OCI_API_PUSH=true OCI_API_BLOBS_ATOMIC=true OCI_API_BLOBS_DELETE=true \
    OCI_API_BLOBS_DIGEST_HEADER="${BLOBS_DIGEST_HEADER:-true}" OCI_API_BLOBS_MOUNT_ANONYMOUS=true OCI_API_BLOBS_UPLOAD_CANCEL=true \
    OCI_API_MANIFESTS_ATOMIC=true OCI_API_MANIFESTS_DELETE=true OCI_API_MANIFESTS_DIGEST_HEADER=true \
    OCI_API_MANIFESTS_TAG_PARAM=true OCI_API_TAGS_ATOMIC=true OCI_API_TAGS_DELETE=true OCI_API_TAGS_LIST=true \
    OCI_API_REFERRER=true OCI_DATA_IMAGE=true OCI_DATA_INDEX=true OCI_DATA_INDEX_LIST=true OCI_DATA_SPARSE=false \
    OCI_DATA_ARTIFACT=true OCI_DATA_SUBJECT=true OCI_DATA_SUBJECT_MISSING=true OCI_DATA_ARTIFACT_LIST=true \
    OCI_DATA_SUBJECT_LIST=true OCI_DATA_DATA_FIELD=true OCI_DATA_NONDISTRIBUTABLE=true \
    OCI_DATA_CUSTOM_FIELDS=true OCI_DATA_NO_LAYERS=true OCI_DATA_EMPTY_BLOB=true OCI_DATA_SHA512=true \
    "$CONFORMANCE_MAIN") >"$report/output.txt" 2>&1
  local rc=$?
  # Every feature and data set on its summary line: Pass, or Disabled (sparse only).
  local summary
  summary=$(grep -E '^  [A-Za-z0-9 -]+\.{2,}:' "$report/output.txt")
  grep -cE ':\s+Pass$' <<<"$summary" | sed 's/$/ features and data sets pass/'
  grep -vE ':\s+Pass$' <<<"$summary"
  if grep -qE ': *(Skip|FAIL)$' "$report/output.txt"; then
    echo "skipped or failed:"
    grep -E ': *(Skip|FAIL)$' -A2 "$report/output.txt" | head -n 30
    rc=1
  fi
  ((rc == 0)) || { echo "berth's log, last lines:"; tail -n 20 "$BERTH_DIR/log"; }
  return $rc
}

echo "== OCI distribution-spec conformance${*:+ (berth serve $*)}"
start_berth "$@" || { cat "$BERTH_DIR/log"; exit 1; }
REPORTS=$(mktemp -d)
on_exit "rm -rf $REPORTS"
check "v1.1 suite (automatic cross-mount)" run_release_suite "$REPORTS/auto" OCI_AUTOMATIC_CROSSMOUNT=1
check "v1.1 suite (manifests deleted before blobs)" run_release_suite "$REPORTS/order" OCI_DELETE_MANIFEST_BEFORE_BLOBS=1 OCI_AUTOMATIC_CROSSMOUNT=1
check "v1.1 suite (blobs deleted before manifests)" run_release_suite "$REPORTS/order2" OCI_DELETE_MANIFEST_BEFORE_BLOBS=0 OCI_AUTOMATIC_CROSSMOUNT=1
check "main-branch suite, OCI_VERSION=1.1, every option on" run_main_suite "$REPORTS/main"
finish
