#!/usr/bin/env bash
# The OCI distribution-spec conformance suite against a fresh `berth`, every workflow enabled.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

CONFORMANCE=$(tool_path conformance)
[[ -x $CONFORMANCE ]] || { echo "conformance suite not built: run scripts/tools.sh" >&2; exit 1; }

run_suite() {
  local report=$1
  shift
  mkdir -p "$report"
  (cd "$report" && env "$@" \
    OCI_ROOT_URL="$BERTH_URL" OCI_NAMESPACE=conformance/main/repo OCI_CROSSMOUNT_NAMESPACE=conformance/other \
    OCI_TEST_PULL=1 OCI_TEST_PUSH=1 OCI_TEST_CONTENT_DISCOVERY=1 OCI_TEST_CONTENT_MANAGEMENT=1 \
    OCI_HIDE_SKIPPED_WORKFLOWS=0 OCI_REPORT_DIR="$report" "$CONFORMANCE" -test.v) >"$report/output.txt" 2>&1
  local rc=$?
  grep -aE 'Passed|Failed|\[FAIL\]' "$report/output.txt" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 12
  return $rc
}

echo "== OCI distribution-spec conformance"
start_berth
REPORTS=$(mktemp -d)
on_exit "rm -rf $REPORTS"
check "conformance suite (automatic cross-mount)" run_suite "$REPORTS/auto" OCI_AUTOMATIC_CROSSMOUNT=1
check "conformance suite (manifests deleted before blobs)" run_suite "$REPORTS/order" OCI_DELETE_MANIFEST_BEFORE_BLOBS=1 OCI_AUTOMATIC_CROSSMOUNT=1
check "conformance suite (blobs deleted before manifests)" run_suite "$REPORTS/order2" OCI_DELETE_MANIFEST_BEFORE_BLOBS=0 OCI_AUTOMATIC_CROSSMOUNT=1
finish
