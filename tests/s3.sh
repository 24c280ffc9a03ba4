#!/usr/bin/env bash
# Berth's storage on real S3-compatible servers started on loopback, each in turn: the storage
# conformance suite and the S3 backend's own tests (multipart objects, prefixes, a wrong secret),
# then berth serving the OCI conformance suites with its blobs in the bucket: on MinIO with its
# metadata in PostgreSQL (the several-replica setup, where the GC soak also runs over two replicas,
# and a replica streams a blob another is still fetching), on SeaweedFS with SQLite and
# redirect: true (clients read blobs from the store through presigned URLs).
# Run from the suite with the same compiler wrapper as its build, so the test binary is reused.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"
set +e
require_tools "$(tool_path minio)" "$(tool_path weed)"
require_commands curl psql runuser
WORK=$(mktemp -d)
on_exit "rm -rf $WORK"
cd "$ROOT" || exit 1

# make_bucket URL KEY SECRET BUCKET
make_bucket() {
  curl -sS -f -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$2:$3" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$1/$4"
}

# replica_test DATABASE DESCRIPTION CARGO_TEST_ARGS...: ignored tests of several replicas on MinIO
# and PostgreSQL, in a bucket and a database of their own.
replica_test() {
  local db=$1 what=$2 bucket=berth-$1-$RANDOM
  shift 2
  if "${PSQL[@]}" -c "CREATE DATABASE $db" >/dev/null && make_bucket "$MINIO_URL" "$MINIO_USER" "$MINIO_PASSWORD" "$bucket"; then
    check "MinIO, with PostgreSQL: $what" \
      env BERTH_TEST_S3_ENDPOINT="$MINIO_URL" BERTH_TEST_S3_BUCKET="$bucket" \
      BERTH_TEST_S3_ACCESS_KEY="$MINIO_USER" BERTH_TEST_S3_SECRET_KEY="$MINIO_PASSWORD" \
      BERTH_POSTGRES_URL="${PG_URL%/postgres}/$db" \
      cargo test --workspace "$@" -- --ignored
  else
    check "MinIO, with PostgreSQL: a bucket and a database for: $what" false
  fi
}

# run_suite NAME URL KEY SECRET REDIRECT METADATA: the ignored S3 tests of the registry crate against
# one server, then berth on it, blob reads served through berth (REDIRECT=false) or by the store,
# metadata in SQLite or in PostgreSQL (METADATA=postgres: the database BERTH_POSTGRES_URL names).
run_suite() {
  local name=$1 url=$2 key=$3 secret=$4 redirect=$5 metadata=$6 bucket=berth-$RANDOM
  if ! make_bucket "$url" "$key" "$secret" "$bucket"; then
    check "$name: a bucket is created" false
    return
  fi
  check "$name: storage conformance, multipart objects, prefixes, a wrong secret" \
    env BERTH_TEST_S3_ENDPOINT="$url" BERTH_TEST_S3_BUCKET="$bucket" \
    BERTH_TEST_S3_ACCESS_KEY="$key" BERTH_TEST_S3_SECRET_KEY="$secret" \
    cargo test --workspace --lib -- --ignored storage::s3 service::assembly service::multiparts
  # berth itself on the bucket: every conformance workflow, objects under a prefix of their own.
  mkdir -p "$WORK/$name"
  printf '%s\n' "$key" >"$WORK/$name/accessKeyId"
  printf '%s\n' "$secret" >"$WORK/$name/secretAccessKey"
  cat >"$WORK/$name/berth.yaml" <<EOF
storage:
  kind: s3
  bucket: $bucket
  prefix: conformance
  endpoint: $url
  path_style: true
  credentials_dir: $WORK/$name
  redirect: $redirect
metadata:
  kind: $metadata
EOF
  BLOBS_DIGEST_HEADER=$([[ $redirect == true ]] && echo false || echo true) \
    bash "$ROOT/tests/conformance.sh" --config "$WORK/$name/berth.yaml" |
    sed -E -e "s/^  (ok|FAIL)( +)/  \1\2$name: /" -e '/^[0-9]+ passed, [0-9]+ failed$/d'
  local rc=${PIPESTATUS[0]}
  check "$name: berth passes the OCI conformance suites on it (redirect: $redirect, $metadata)" test "$rc" = 0
  if [[ $metadata == postgres ]]; then
    # A database this berth created already rules older berths out: contracting has nothing to do.
    check "$name: berth contract-schema on the database it created has nothing to do" bash -c \
      "'$BERTH_BIN' contract-schema --config '$WORK/$name/berth.yaml' | grep -q 'nothing to do'"
  fi
  if [[ $redirect == true ]]; then
    start_berth --config "$WORK/$name/berth.yaml" || { cat "$BERTH_DIR/log"; return; }
    head -c 3000000 /dev/urandom >"$WORK/blob"
    local digest=sha256:$(sha256sum <"$WORK/blob" | cut -d' ' -f1)
    curl -s -o /dev/null -X POST "$BERTH_URL/v2/s3/app/blobs/uploads/?digest=$digest" --data-binary "@$WORK/blob"
    check "$name: a blob GET answers 307 to the store" bash -c \
      "curl -s -o /dev/null -D - '$BERTH_URL/v2/s3/app/blobs/$digest' | tr -d '\r' |
       grep -q '^HTTP/1.1 307' && curl -s -D - -o /dev/null '$BERTH_URL/v2/s3/app/blobs/$digest' |
       grep -qi '^location: ${url}/'"
    check "$name: and the URL serves the blob, ranges too" bash -c \
      "curl -sL '$BERTH_URL/v2/s3/app/blobs/$digest' | sha256sum | grep -q '${digest#sha256:}' &&
       [[ \$(curl -sL -H 'Range: bytes=10-19' '$BERTH_URL/v2/s3/app/blobs/$digest' | wc -c) == 10 ]]"
    check "$name: a blob the repository does not hold is 404, not a URL" \
      equal "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/v2/s3/other/blobs/$digest")" 404
    kill "$BERTH_PID"
  fi
  # A wrong secret: not ready, and a push is refused with 503 and a code, promptly.
  local metrics_port
  metrics_port=$(free_port)
  sed -e "s|credentials_dir: .*|credentials_dir: $WORK/$name-wrong|" "$WORK/$name/berth.yaml" >"$WORK/$name/wrong.yaml"
  printf 'metrics:\n  listen: 127.0.0.1:%s\n' "$metrics_port" >>"$WORK/$name/wrong.yaml"
  mkdir -p "$WORK/$name-wrong"
  printf '%s\n' "$key" >"$WORK/$name-wrong/accessKeyId"
  printf 'not-the-secret\n' >"$WORK/$name-wrong/secretAccessKey"
  start_berth --config "$WORK/$name/wrong.yaml" || { cat "$BERTH_DIR/log"; return; }
  check "$name, wrong secret: /readyz answers 503" \
    equal "$(curl -s -o /dev/null -w '%{http_code}' "$BERTH_URL/readyz")" 503
  # Why, in the store's words, on the registry port and on the metrics listener alike.
  check "$name, wrong secret: /readyz says the storage is the problem, not the database" bash -c \
    "for u in '$BERTH_URL' 'http://127.0.0.1:$metrics_port'; do
       curl -s \$u/readyz | python3 -c 'import json,sys; b=json.load(sys.stdin); assert b[\"ready\"] is False and b[\"database\"] is None and \"storage\" in b[\"storage\"], b' || exit 1
     done"
  local loc
  loc=$(curl -s -D - -o /dev/null -X POST "$BERTH_URL/v2/s3/app/blobs/uploads/" | tr -d '\r' |
    awk 'tolower($1) == "location:" {print $2}')
  check "$name, wrong secret: a push fails with 503 UNAVAILABLE, not a hang" bash -c \
    "curl -s -m 60 -o '$WORK/wrong.json' -w '%{http_code}' -X PATCH --data-binary x '$BERTH_URL$loc' | grep -qx 503 &&
     grep -q '\"code\":\"UNAVAILABLE\"' '$WORK/wrong.json'"
  kill "$BERTH_PID"
}

echo "== MinIO, with PostgreSQL"
if start_minio "$WORK/minio" && start_postgres && "${PSQL[@]}" -c "CREATE DATABASE berth"; then
  export BERTH_POSTGRES_URL=${PG_URL%/postgres}/berth
  run_suite MinIO "$MINIO_URL" "$MINIO_USER" "$MINIO_PASSWORD" false postgres
  replica_test soak "collections beside pushes, pulls and deletes over two replicas lose nothing live" \
    --test gc_soak
  replica_test segments "a replica streams a blob that another replica is still fetching" --test proxy
else
  tail -n 20 "$WORK/minio/minio.log"
  check "MinIO and PostgreSQL start" false
fi
echo "== SeaweedFS"
if start_seaweedfs "$WORK/seaweedfs"; then
  run_suite SeaweedFS "$SEAWEED_URL" "$SEAWEED_USER" "$SEAWEED_PASSWORD" true sqlite
else
  tail -n 20 "$WORK/seaweedfs/weed.log"
  check "SeaweedFS starts" false
fi
finish
