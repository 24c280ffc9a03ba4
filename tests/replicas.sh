#!/usr/bin/env bash
# Several berth replicas over one S3 bucket (MinIO) and one PostgreSQL database, requests spread
# over them: an upload continued and finished on other replicas, concurrent pushes of one tag, a
# delete seen everywhere at once, real clients pushing through one replica and pulling through
# another, a replica killed in the middle of uploads, a cold pull-through of one image by clients on every replica costing one upstream
# fetch, a replica killed in the middle of a fetch another replica streams, and the database
# stopped and started again under requests.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"
set +e
require_tools "$(tool_path minio)" "$(tool_path crane)"
require_commands curl skopeo psql runuser python3
WORK=$(mktemp -d)
on_exit "rm -rf $WORK"

start_minio "$WORK/minio" || { tail -n 20 "$WORK/minio/minio.log"; check "MinIO starts" false; finish; exit; }
start_postgres || { check "PostgreSQL starts" false; finish; exit; }
"${PSQL[@]}" -c "CREATE DATABASE berth" || exit 1
export BERTH_POSTGRES_URL=${PG_URL%/postgres}/berth
BUCKET=berth-replicas
curl -sS -f -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" --user "$MINIO_USER:$MINIO_PASSWORD" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$MINIO_URL/$BUCKET" || exit 1
mkdir -p "$WORK/s3"
printf '%s\n' "$MINIO_USER" >"$WORK/s3/accessKeyId"
printf '%s\n' "$MINIO_PASSWORD" >"$WORK/s3/secretAccessKey"
# The upstream the replicas mirror: another berth, whose sent-bytes counter says what they fetched.
start_berth || { check "the upstream starts" false; finish; exit; }
UPSTREAM=$BERTH_URL
# The same upstream behind a proxy that holds a blob part-way until told to go on.
HELD=127.0.0.1:$(free_port)
mkdir -p "$WORK/held"
python3 "$ROOT/tests/held_upstream.py" "${HELD#*:}" "$UPSTREAM" "$WORK/held" $((18 << 20)) >"$WORK/held.log" 2>&1 &
on_exit "kill $!"
wait_for "http://$HELD/v2/" 20 || { check "the holding upstream starts" false; finish; exit; }
cat >"$WORK/berth.yaml" <<EOF
proxy:
  upstreams:
    - name: docker.io
      url: $UPSTREAM
      default: true
      include: ["library/**"]
    - name: held.test
      url: http://$HELD
storage:
  kind: s3
  bucket: $BUCKET
  endpoint: $MINIO_URL
  path_style: true
  credentials_dir: $WORK/s3
metadata:
  kind: postgres
  max_connections: 8
EOF

R=()
for i in 0 1 2; do
  start_berth --config "$WORK/berth.yaml" || { cat "$BERTH_DIR/log"; check "replica $i starts" false; finish; exit; }
  R+=("$BERTH_URL")
done

# put_blob URL REPO FILE: a monolithic push; prints the digest.
put_blob() {
  local d
  d=sha256:$(sha256sum <"$3" | cut -d' ' -f1)
  curl -sf -o /dev/null -X POST -H 'Content-Type: application/octet-stream' \
    "$1/v2/$2/blobs/uploads/?digest=$d" --data-binary "@$3" && echo "$d"
}

# image_file URL REPO TEXT: pushes the config TEXT of an image; prints its manifest's file.
image_file() {
  local dir=$WORK/img-$RANDOM$RANDOM cfg
  mkdir -p "$dir"
  printf '{"architecture":"amd64","os":"linux","note":"%s"}' "$3" >"$dir/config"
  cfg=$(put_blob "$1" "$2" "$dir/config") || return 1
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
    "$cfg" "$(wc -c <"$dir/config")" "$cfg" "$(wc -c <"$dir/config")" >"$dir/manifest"
  echo "$dir/manifest"
}

# put_image URL REPO TAG TEXT [HEADER]: an image whose config is TEXT; prints the manifest's
# digest and the status of its PUT (sent with HEADER); fails unless that is 201.
put_image() {
  local file m code
  file=$(image_file "$1" "$2" "$4") || return 1
  m=sha256:$(sha256sum <"$file" | cut -d' ' -f1)
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    ${5:+-H "$5"} "$1/v2/$2/manifests/$3" --data-binary "@$file")
  echo "$m"
  [[ $code == 201 ]] || { echo "$code"; return 1; }
}

status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
location() { curl -s -D - -o /dev/null "$@" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}'; }

echo "== an upload started on one replica, continued on another, finished on a third"
# 20 MB: the first chunk stays an object of its own; the second fills it into multipart parts.
chunked_across_replicas() {
  head -c 20000000 /dev/urandom >"$WORK/big"
  head -c 6000000 "$WORK/big" >"$WORK/c1"
  tail -c +6000001 "$WORK/big" >"$WORK/c2"
  local d loc
  d=sha256:$(sha256sum <"$WORK/big" | cut -d' ' -f1)
  loc=$(location -X POST "${R[0]}/v2/spread/app/blobs/uploads/") || return 1
  loc=$(location -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-5999999' \
    --data-binary "@$WORK/c1" "${R[1]}$loc")
  [[ -n $loc ]] || { echo "first PATCH refused"; return 1; }
  equal "$(curl -s -D - -o /dev/null "${R[2]}$loc" | tr -d '\r' | awk 'tolower($1) == "range:" {print $2}')" 0-5999999 || return 1
  loc=$(location -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 6000000-19999999' \
    --data-binary "@$WORK/c2" "${R[2]}$loc")
  [[ -n $loc ]] || { echo "second PATCH refused"; return 1; }
  local sep='?'
  [[ $loc == *\?* ]] && sep='&'
  equal "$(status -X PUT "${R[0]}$loc${sep}digest=$d")" 201 || return 1
  for r in "${R[@]}"; do
    equal "$(curl -s "$r/v2/spread/app/blobs/$d" | sha256sum | cut -d' ' -f1)" "${d#sha256:}" || return 1
  done
  # The second chunk went into the session's multipart upload, and nothing of it is left.
  curl -s "${R[2]}/metrics" | grep 'operation="put_part"' | grep -q 'outcome="ok"' || { echo "no parts sent"; return 1; }
  curl -s "${R[0]}/metrics" | grep 'operation="complete_assembly"' | grep -q 'outcome="ok"' || { echo "not completed"; return 1; }
}
check "the blob is whole, every replica serves it, its bytes went into one multipart upload" chunked_across_replicas

echo "== 16 concurrent pushes of one tag through three replicas"
concurrent_tag_pushes() {
  local i pids=() digests
  for i in $(seq 1 16); do
    put_image "${R[$((i % 3))]}" race/app latest "push $i" >"$WORK/race-$i" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "a push failed"; return 1; }; done
  digests=$(cat "$WORK"/race-*)
  local seen
  seen=$(curl -s -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "${R[0]}/v2/race/app/manifests/latest" | tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" {print $2}')
  grep -qx "$seen" <<<"$digests" || { echo "tag points at $seen, pushed: $digests"; return 1; }
  for r in "${R[@]}"; do
    equal "$(curl -s -o /dev/null -D - "$r/v2/race/app/manifests/latest" | tr -d '\r' |
      awk 'tolower($1) == "docker-content-digest:" {print $2}')" "$seen" || return 1
    for d in $digests; do equal "$(status "$r/v2/race/app/manifests/$d")" 200 || return 1; done
  done
}
check "the tag ends on one pushed digest, the same on every replica, and every image pulls" concurrent_tag_pushes

echo "== 16 conditional moves of one tag through three replicas, each from the digest it saw"
conditional_tag_moves() {
  local start i pids=() won=() lost=0 winner
  start=$(put_image "${R[0]}" cas/app latest start) || return 1
  for i in $(seq 1 16); do
    put_image "${R[$((i % 3))]}" cas/app latest "move $i" "If-Match: \"$start\"" >"$WORK/cas-$i" &
    pids+=($!)
  done
  for i in $(seq 1 16); do
    if wait "${pids[$((i - 1))]}"; then won+=("$(head -n 1 "$WORK/cas-$i")"); else
      equal "$(sed -n 2p "$WORK/cas-$i")" 412 || return 1
      lost=$((lost + 1))
    fi
  done
  equal "${#won[@]} won, $lost refused" "1 won, 15 refused" || return 1
  winner=${won[0]}
  for r in "${R[@]}"; do
    equal "$(curl -s -o /dev/null -D - "$r/v2/cas/app/manifests/latest" | tr -d '\r' |
      awk 'tolower($1) == "docker-content-digest:" {print $2}')" "$winner" || return 1
  done
}
check "exactly one moves it (the others get 412), and every replica names the winner" conditional_tag_moves

echo "== a delete on one replica is seen by the others at once"
delete_seen_everywhere() {
  local m
  m=$(put_image "${R[0]}" gone/app v1 "to be deleted") || return 1
  for r in "${R[@]}"; do equal "$(status "$r/v2/gone/app/manifests/$m")" 200 || return 1; done
  equal "$(status -X DELETE "${R[1]}/v2/gone/app/manifests/$m")" 202 || return 1
  for r in "${R[@]}"; do
    equal "$(status "$r/v2/gone/app/manifests/$m")" 404 || return 1
    equal "$(status "$r/v2/gone/app/manifests/v1")" 404 || return 1
  done
  # A blob too: every replica has looked it up (and keeps the answer) before the delete.
  local b
  printf 'a layer to be deleted' >"$WORK/deleted-layer"
  b=$(put_blob "${R[0]}" gone/app "$WORK/deleted-layer") || return 1
  for r in "${R[@]}"; do equal "$(status -I "$r/v2/gone/app/blobs/$b")" 200 || return 1; done
  equal "$(status -X DELETE "${R[2]}/v2/gone/app/blobs/$b")" 202 || return 1
  for r in "${R[@]}"; do equal "$(status -I "$r/v2/gone/app/blobs/$b")" 404 || return 1; done
}
check "after the 202, every replica answers 404 (a manifest, its tag, a blob)" delete_seen_everywhere

echo "== real clients: push through one replica, pull through the others"
put_image "${R[0]}" source/app v1 "client image" >/dev/null
check "skopeo copies an image in through replica 1" \
  skopeo copy --src-tls-verify=false --dest-tls-verify=false --all \
  "docker://${R[0]#http://}/source/app:v1" "docker://${R[1]#http://}/clients/app:v1"
check "skopeo reads it back through replica 3" \
  skopeo inspect --tls-verify=false --raw "docker://${R[2]#http://}/clients/app:v1"
check "crane copies it between repositories through replica 3, and pulls it through replica 1" bash -c \
  "'$(tool_path crane)' copy --insecure '${R[2]#http://}/clients/app:v1' '${R[2]#http://}/clients/copy:v1' &&
   '$(tool_path crane)' pull --insecure '${R[0]#http://}/clients/copy:v1' '$WORK/pulled.tar' && test -s '$WORK/pulled.tar'"

check "/metrics shows the database pool's use" bash -c \
  "curl -s '${R[0]}/metrics' | grep -q '^berth_database_max_connections 8' &&
   curl -s '${R[0]}/metrics' | grep -q '^berth_database_connections{state=\"idle\"} [1-8]'"

echo "== a replica killed (SIGKILL) in the middle of uploads"
killed_mid_upload() {
  start_berth --config "$WORK/berth.yaml" || return 1
  local doomed=$BERTH_URL pid=$BERTH_PID d loc range sep='?'
  head -c 3000000 /dev/urandom >"$WORK/k-big"
  head -c 1000000 "$WORK/k-big" >"$WORK/k-c1"
  tail -c +1000001 "$WORK/k-big" >"$WORK/k-c2"
  d=sha256:$(sha256sum <"$WORK/k-big" | cut -d' ' -f1)
  loc=$(location -X POST "$doomed/v2/killed/app/blobs/uploads/") || return 1
  loc=$(location -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-999999' \
    --data-binary "@$WORK/k-c1" "$doomed$loc")
  [[ -n $loc ]] || { echo "first PATCH refused"; return 1; }
  # Both slow: a chunk of the session, and a whole blob in one request. Kill the replica mid-way.
  curl -s -o /dev/null --limit-rate 200k -X PATCH -H 'Content-Type: application/octet-stream' \
    -H 'Content-Range: 1000000-2999999' --data-binary "@$WORK/k-c2" "$doomed$loc" &
  local chunk=$!
  curl -s -o /dev/null --limit-rate 200k -X POST -H 'Content-Type: application/octet-stream' \
    "$doomed/v2/killed/app/blobs/uploads/?digest=$d" --data-binary "@$WORK/k-big" &
  local whole=$!
  sleep 2
  kill -9 "$pid"
  wait "$chunk" "$whole"
  # Nothing partial is visible anywhere.
  for r in "${R[@]}"; do equal "$(status -I "$r/v2/killed/app/blobs/$d")" 404 || return 1; done
  # The client resumes through the others: the session stands where its last recorded chunk ended.
  range=$(curl -s -D - -o /dev/null "${R[0]}$loc" | tr -d '\r' | awk 'tolower($1) == "range:" {print $2}')
  equal "$range" 0-999999 || return 1
  loc=$(location -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 1000000-2999999' \
    --data-binary "@$WORK/k-c2" "${R[1]}$loc")
  [[ -n $loc ]] || { echo "resumed PATCH refused"; return 1; }
  [[ $loc == *\?* ]] && sep='&'
  equal "$(status -X PUT "${R[2]}$loc${sep}digest=$d")" 201 || return 1
  for r in "${R[@]}"; do
    equal "$(curl -s "$r/v2/killed/app/blobs/$d" | sha256sum | cut -d' ' -f1)" "${d#sha256:}" || return 1
  done
  # The whole-blob client retries through another replica too.
  equal "$(status -X POST -H 'Content-Type: application/octet-stream' \
    "${R[0]}/v2/killed/other/blobs/uploads/?digest=$d" --data-binary "@$WORK/k-big")" 201
}
check "clients that retry finish through the other replicas, and nothing partial is visible" killed_mid_upload

echo "== a cold pull-through of one image by 8 clients spread over the 3 replicas"
sent_bytes() { curl -sf "$1/metrics" | awk '/^berth_http_sent_bytes/ {print $NF}'; }
cold_pull_everywhere() {
  local dir=$WORK/cold i layers=() d size total=0 manifest cfg before after pids=()
  mkdir -p "$dir"
  for i in 1 2 3; do
    head -c $((1500000 + i * 250000)) /dev/urandom | gzip -1 >"$dir/layer$i"
    d=$(put_blob "$UPSTREAM" library/cold "$dir/layer$i") || return 1
    size=$(wc -c <"$dir/layer$i")
    layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$d\",\"size\":$size}")
    total=$((total + size))
  done
  printf '{"architecture":"amd64","os":"linux"}' >"$dir/config"
  cfg=$(put_blob "$UPSTREAM" library/cold "$dir/config") || return 1
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[%s]}' \
    "$cfg" "$(wc -c <"$dir/config")" "$(IFS=,; echo "${layers[*]}")" >"$dir/manifest"
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    "$UPSTREAM/v2/library/cold/manifests/v1" --data-binary "@$dir/manifest" || return 1
  total=$((total + $(wc -c <"$dir/config") + $(wc -c <"$dir/manifest")))
  before=$(sent_bytes "$UPSTREAM") || return 1
  for i in $(seq 0 7); do
    skopeo copy -q --preserve-digests --src-tls-verify=false \
      "docker://${R[$((i % 3))]#http://}/docker.io/library/cold:v1" \
      "oci:$dir/pull-$i:v1" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || { echo "a pull failed"; return 1; }; done
  for i in $(seq 0 7); do
    for f in "$dir"/layer? "$dir/config"; do
      [[ -f $dir/pull-$i/blobs/sha256/$(sha256sum <"$f" | cut -d' ' -f1) ]] || { echo "pull $i lacks $f"; return 1; }
    done
  done
  after=$(sent_bytes "$UPSTREAM") || return 1
  # Manifests and the metrics pages themselves are the only other bytes: well under 1%.
  python3 - "$before" "$after" "$total" <<'PY'
import sys
before, after, image = map(int, sys.argv[1:])
ratio = (after - before) / image
print(f"upstream sent {after - before} bytes for an image of {image}: {ratio:.3f}x")
sys.exit(0 if 1.0 <= ratio < 1.01 else 1)
PY
}
check "the upstream sends the image once (1.00x its bytes), not once per replica" cold_pull_everywhere

echo "== a replica killed in the middle of a pull-through fetch that another replica streams"
# The doomed replica fetches a 20 MiB layer, held upstream after 18 MiB; a client of replica 2
# gets what the doomed one published (16 MiB) meanwhile. After the kill, replica 2 takes the fetch
# over once the claim expires (30 s) and finishes the same response with the right bytes.
holder_killed_mid_fetch() {
  start_berth --config "$WORK/berth.yaml" || return 1
  local doomed=$BERTH_URL pid=$BERTH_PID d first follower deadline
  head -c $((20 << 20)) /dev/urandom >"$WORK/held-layer"
  d=$(put_blob "$UPSTREAM" library/held "$WORK/held-layer") || return 1
  curl -s -o /dev/null "$doomed/v2/held.test/library/held/blobs/$d" &
  first=$!
  deadline=$((SECONDS + 30))
  until [[ -f $WORK/held/holding ]]; do
    ((SECONDS < deadline)) || { echo "the doomed replica's fetch never reached the hold"; return 1; }
    sleep 0.1
  done
  curl -s -N -o "$WORK/held-follower" -w '%{http_code}' "${R[1]}/v2/held.test/library/held/blobs/$d" \
    >"$WORK/held-code" &
  follower=$!
  deadline=$((SECONDS + 30))
  until (($(stat -c %s "$WORK/held-follower" 2>/dev/null || echo 0) >= 16 << 20)); do
    ((SECONDS < deadline)) || { echo "the follower never streamed the published part ($(stat -c %s "$WORK/held-follower") bytes)"; return 1; }
    sleep 0.1
  done
  kill -9 "$pid"
  wait "$first"
  touch "$WORK/held/release"
  wait "$follower"
  equal "$(cat "$WORK/held-code")" 200 || return 1
  equal "$(sha256sum <"$WORK/held-follower" | cut -d' ' -f1)" "${d#sha256:}" || return 1
  for r in "${R[@]}"; do
    equal "$(curl -s "$r/v2/held.test/library/held/blobs/$d" | sha256sum | cut -d' ' -f1)" "${d#sha256:}" || return 1
  done
}
check "the other replica takes the fetch over and its client gets every byte, verified" holder_killed_mid_fetch

echo "== the database stopped and started again while requests run"
database_outage() {
  local m
  m=$(put_image "${R[0]}" outage/app v1 "survives the outage") || return 1
  "${PG_STOP[@]}" >/dev/null || return 1
  local code
  code=$(curl -s -m 30 -o "$WORK/outage.json" -w '%{http_code}' "${R[1]}/v2/outage/app/manifests/v1")
  equal "$code" 503 || return 1
  grep -q '"code":"UNAVAILABLE"' "$WORK/outage.json" || { cat "$WORK/outage.json"; return 1; }
  equal "$(status -m 30 "${R[2]}/readyz")" 503 || return 1
  curl -s -m 30 "${R[2]}/readyz" | python3 -c 'import json,sys; b=json.load(sys.stdin); assert b["ready"] is False and b["database"] and b["storage"] is None, b' || return 1
  "${PG_START[@]}" >/dev/null || return 1
  local deadline=$((SECONDS + 30))
  until [[ $(status "${R[1]}/readyz") == 200 ]]; do
    ((SECONDS < deadline)) || { echo "not ready again within 30 s"; return 1; }
    sleep 0.2
  done
  for r in "${R[@]}"; do equal "$(status "$r/v2/outage/app/manifests/v1")" 200 || return 1; done
  put_image "${R[2]}" outage/app v2 "after the outage" >/dev/null
}
check "503 UNAVAILABLE while it is down, not a hang; service resumes by itself, nothing lost" database_outage

finish
