#!/usr/bin/env bash
# The real backends the storage and metadata work builds on, provisioned and started the way the
# suites will start them: MinIO (S3 API, signed requests) and PostgreSQL (Debian's server). This
# checks the servers, not Berth, so it is not part of `make test`; run it by hand after
# `bash scripts/tools.sh minio` and `apt-get install postgresql`.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"
set +e

require_tools "$(tool_path minio)"
require_commands psql runuser
WORK=$(mktemp -d)
on_exit "rm -rf $WORK"

echo "== MinIO (S3-compatible object storage)"
s3_round_trip() {
  head -c $((5 << 20)) /dev/urandom >"$WORK/object"
  s3 PUT /berth-test >/dev/null &&
    s3 PUT /berth-test/blobs/sha256/object -T "$WORK/object" >/dev/null &&
    s3 GET /berth-test/blobs/sha256/object -o "$WORK/back" &&
    equal "$(sha256sum <"$WORK/back")" "$(sha256sum <"$WORK/object")" &&
    s3 GET "/berth-test?list-type=2&prefix=blobs%2F" | grep -q '<Key>blobs/sha256/object</Key>'
}
s3_refuses_bad_signatures() {
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$MINIO_USER:wrong" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$MINIO_URL/berth-test/blobs/sha256/object")
  equal "$status" 403
}
start_minio "$WORK/minio" || { tail -n 20 "$WORK/minio/minio.log"; exit 1; }
check "MinIO answers its health check" curl -sf "$MINIO_URL/minio/health/live"
check "bucket, put, get and list with SigV4" s3_round_trip
check "a wrong secret is refused (403)" s3_refuses_bad_signatures

echo "== PostgreSQL"
pg_round_trip() {
  "${PSQL[@]}" -c "CREATE TABLE tags (repository text, name text, digest text, PRIMARY KEY (repository, name))" &&
    "${PSQL[@]}" -c "INSERT INTO tags VALUES ('library/alpine', '3.20', 'sha256:aa')
                     ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest" &&
    equal "$("${PSQL[@]}" -c "SELECT digest FROM tags WHERE name = '3.20'")" "sha256:aa" &&
    "${PSQL[@]}" -c "SELECT version()" | grep -q '^PostgreSQL'
}
start_postgres || exit 1
check "PostgreSQL accepts connections" "${PSQL[@]}" -c "SELECT 1"
check "schema, upsert and query through psql" pg_round_trip
finish
