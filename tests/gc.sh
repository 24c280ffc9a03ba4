#!/usr/bin/env bash
# Garbage collection with real clients: skopeo pushes, crane deletes, `berth gc` (the admin API's
# client) removes what no tag reaches, and every image still tagged pulls whole with skopeo and
# crane. Only an admin may collect. A retention policy removes tags by its rules.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

CRANE=$(tool_path crane)
require_tools "$CRANE"
require_commands skopeo

client_workspace
htpasswd_users alice bob
printf 'alice-pw' >"$WORK/alice.pw"
cat >"$WORK/berth.yml" <<YAML
auth:
  htpasswd: $WORK/htpasswd
  rules:
    - { users: [alice], repositories: ["**"], actions: [pull, push, delete, admin] }
    - { users: [bob], repositories: ["**"], actions: [pull, push, delete] }
retention:
  policies:
    - repositories: ["gc/ret"]
      protect: [main]
      protect_annotations: ["org.example.release=true"]
      tags: [{ match: { regex: "^pr-" }, keep: { most_recently_pushed: 1 } }]
YAML
start_berth --config "$WORK/berth.yml"
R=$BERTH_ADDR
SK=(skopeo --insecure-policy)
blob_files() { stored_blobs "$BERTH_DIR/data"; }
gc() { "$BERTH_BIN" gc --url "$BERTH_URL" --grace 0s --username alice --password-file "$WORK/alice.pw" "$@"; }
push() { "${SK[@]}" copy ${3:-} --dest-tls-verify=false --dest-creds alice:alice-pw "oci:$WORK/layout:$1" "docker://$R/$2"; }
pushed_all() { push multi gc/keep:v1 && push multiarch gc/drop:v1 --all && push multi gc/drop:multi; }
deleted() { "$CRANE" --insecure delete "$R/gc/drop@$MULTIARCH" && "$CRANE" --insecure delete "$R/gc/drop@$MULTI"; }
refused() { # refused PATTERN COMMAND...: the command fails and says PATTERN
  local pattern=$1 out
  shift
  if out=$("$@" 2>&1); then echo "it succeeded: $out"; return 1; fi
  grep -q "$pattern" <<<"$out" || { echo "$out"; return 1; }
}
bearer_refused() {
  local token
  token=$(curl -sf -u alice:alice-pw "$BERTH_URL/token?service=berth&scope=repository:gc/keep:pull" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') &&
    equal "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $token" "$BERTH_URL/admin/v1/gc")" 401
}
dry_run() {
  local out
  out=$(gc --dry-run) && echo "$out" &&
    grep -q 'gc/drop: would remove 2 manifests, 10 blob links' <<<"$out" &&
    grep -q 'would remove 2 manifests, 10 blob links, 9 blobs' <<<"$out" && equal "$(blob_files)" 14
}
removes() {
  local out
  out=$(gc --report-file "$WORK/gc-summary.json") && echo "$out" &&
    grep -q '^removed 2 manifests, 10 blob links, 9 blobs' <<<"$out" &&
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert (r["dryRun"], r["manifestsRemoved"], r["blobsRemoved"]) == (False, 2, 9) and r["bytesFreed"] > 0, r' "$WORK/gc-summary.json"
}
nothing_left() {
  gc --output json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); assert (r["manifestsRemoved"], r["linksRemoved"], len(r["blobs"])) == (0, 0, 0), r'
}
pulls_whole() {
  "${SK[@]}" copy --preserve-digests --src-tls-verify=false --src-creds bob:bob-pw "docker://$R/gc/keep:v1" "oci:$WORK/back:v1" || return 1
  local b
  for b in "$WORK"/back/blobs/sha256/*; do
    cmp -s "$b" "$WORK/layout/blobs/sha256/$(basename "$b")" || { echo "$(basename "$b") differs"; return 1; }
  done
}
crane_pulls() {
  equal "$("$CRANE" --insecure digest "$R/gc/keep:v1")" "$MULTI" &&
    "$CRANE" --insecure pull --format oci "$R/gc/keep:v1" "$WORK/crane-back"
}
index_gone() {
  ! "$CRANE" --insecure manifest "$R/gc/drop@$MULTIARCH" 2>/dev/null &&
    ! "$CRANE" --insecure manifest "$R/gc/drop:v1" 2>/dev/null
}
pushed_again() {
  push multiarch gc/drop:v2 --all &&
    "${SK[@]}" copy --all --src-tls-verify=false --src-creds bob:bob-pw "docker://$R/gc/drop:v2" "oci:$WORK/again:v2"
}

echo "== pushed, then deleted"
check "skopeo pushes an image and a multi-arch index" pushed_all
# multi: 3 layers, a config, a manifest; multiarch: an index and two images of 2 layers each.
# Deleting the index leaves its two images untagged; the collection takes them, every link in
# gc/drop (multi's blobs stay for gc/keep) and the 9 blobs only multiarch used.
check "14 blobs are stored" equal "$(blob_files)" 14
"$CRANE" auth login "$R" -u alice -p alice-pw >/dev/null 2>&1
check "crane deletes the index and the image in gc/drop" deleted

echo "== who may collect"
check "anonymous callers are asked for credentials" refused 401 "$BERTH_BIN" gc --url "$BERTH_URL"
check "a failed run writes its error to the report file" bash -c \
  "! '$BERTH_BIN' gc --url '$BERTH_URL' --report-file '$WORK/refused.json' 2>/dev/null && grep -q '\"error\":.*401' '$WORK/refused.json'"
check "bob, not granted admin, is refused" \
  refused 'not granted admin' env BERTH_PASSWORD=bob-pw "$BERTH_BIN" gc --url "$BERTH_URL" --username bob
check "a token is not enough: the admin API wants credentials" bearer_refused
check "a malformed request is a 400 that says why" bash -c \
  "curl -s -u alice:alice-pw -X POST -d '{\"grace\":\"soon\"}' $BERTH_URL/admin/v1/gc | grep -q 'grace'"

echo "== berth gc"
check "a dry run says what would go and removes nothing" dry_run
check "a run removes the bytes of what no tag reaches" removes
check "only the tagged image's 5 blobs are left on disk" equal "$(blob_files)" 5
check "a second run finds nothing to remove (JSON report)" nothing_left
check "metrics count the runs and what they removed" bash -c "
  m=\$(curl -sf $BERTH_URL/metrics) &&
  grep -q 'berth_gc_removed_total{kind=\"manifest\"} 2' <<<\"\$m\" &&
  grep -q 'berth_gc_removed_total{kind=\"blob\"} 9' <<<\"\$m\" &&
  grep -q 'berth_gc_runs_total{result=\"ok\",dry_run=\"true\"} 1' <<<\"\$m\" &&
  grep -q '^berth_gc_last_success_timestamp_seconds [1-9]' <<<\"\$m\""

echo "== what stays pulls whole"
check "skopeo pulls the tagged image, every blob intact" pulls_whole
check "crane reads the same digest and pulls it" crane_pulls
check "the deleted index and its children are gone" index_gone
check "a push after the collection stores the collected bytes again" pushed_again

echo "== runs"
progress_lines() {
  gc --dry-run 2>"$WORK/progress.jsonl" >/dev/null &&
    python3 -c 'import json,sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
assert lines and all(l["run"] == lines[0]["run"] for l in lines), lines
assert lines[-1]["state"] == "succeeded" and lines[-1]["progress"]["phase"] == "done", lines[-1]' "$WORK/progress.jsonl"
}
runs_listed() {
  curl -sf -u alice:alice-pw "$BERTH_URL/admin/v1/gc/runs?n=2" | python3 -c 'import json,sys
runs = json.load(sys.stdin)["runs"]
assert len(runs) == 2 and runs[0]["dryRun"] and runs[1]["dryRun"], runs
assert all(r["state"] == "succeeded" and "report" not in r for r in runs), runs
print(runs[0]["id"])' >"$WORK/run.id" &&
    curl -sf -u alice:alice-pw "$BERTH_URL/admin/v1/gc/runs/$(cat "$WORK/run.id")" | python3 -c 'import json,sys
r = json.load(sys.stdin)
assert r["report"]["dryRun"] is True and r["progress"]["phase"] == "done" and r["endedAt"], r'
}
progress_bar() { # on a terminal (script(1) gives it one): a line redrawn, then the summary
  script -qec "$BERTH_BIN gc --url $BERTH_URL --dry-run --username alice --password-file $WORK/alice.pw" /dev/null >"$WORK/tty.out" &&
    grep -q $'\r.*done .*\\[#\\{24\\}\\] [0-9]*/[0-9]* repositories' "$WORK/tty.out" &&
    grep -q 'would remove 0 manifests' "$WORK/tty.out" && ! grep -q '"progress"' "$WORK/tty.out"
}
status_of() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
check "berth gc off a terminal follows the run in JSON lines on stderr" progress_lines
check "berth gc on a terminal draws a progress bar" progress_bar
check "the runs are listed newest first; one shows its report" runs_listed
check "a run that ended cannot be cancelled (409)" \
  equal "$(status_of -u alice:alice-pw -X DELETE "$BERTH_URL/admin/v1/gc/runs/$(cat "$WORK/run.id")")" 409
check "an unknown run is a 404" equal "$(status_of -u alice:alice-pw "$BERTH_URL/admin/v1/gc/runs/nope")" 404
check "bob may not read the runs" equal "$(status_of -u bob:bob-pw "$BERTH_URL/admin/v1/gc/runs")" 403

echo "== retention"
pushed_prs() {
  push multi gc/ret:pr-1 &&
    "$CRANE" --insecure mutate --annotation org.example.release=true -t "$R/gc/ret:pr-0" "$R/gc/ret:pr-1" &&
    sleep 1.1 && push multiarch gc/ret:pr-2 --all && push multi gc/ret:main
}
retention_dry() {
  gc --dry-run --output json | python3 -c 'import json,sys
r = json.load(sys.stdin)
tags = [(x["repository"], t["tag"]) for x in r["repositories"] for t in x.get("tags", [])]
assert tags == [("gc/ret", "pr-1")], tags
reason = r["repositories"][0]["tags"][0]["reason"]
assert "retention.policies[0]" in reason and "most recently pushed" in reason, reason
kept = {t["tag"]: t["reason"] for x in r["repositories"] if x["repository"] == "gc/ret" for t in x["keptTags"]}
assert "protected by \"main\"" in kept["main"], kept
assert "annotation org.example.release=true" in kept["pr-0"] and "keeps it" in kept["pr-2"], kept'
}
retention_real() {
  local out
  out=$(gc) && echo "$out" && grep -q '^gc/ret: removed 1 tags, 0 manifests' <<<"$out" &&
    ! "$CRANE" --insecure manifest "$R/gc/ret:pr-1" 2>/dev/null &&
    "$CRANE" --insecure manifest "$R/gc/ret:pr-2" >/dev/null &&
    "$CRANE" --insecure manifest "$R/gc/ret:pr-0" | grep -q '"org.example.release":"true"' &&
    "${SK[@]}" copy --src-tls-verify=false --src-creds bob:bob-pw "docker://$R/gc/ret:main" "oci:$WORK/main:v1"
}
check "skopeo pushes pr-1, crane an annotated copy pr-0, then pr-2 and main" pushed_prs
check "the policy's dry run names pr-1 and why, and why the others stay" retention_dry
check "a run removes the older pr- tag; pr-2, main and the annotated pr-0 stay" retention_real

echo "== storage usage"
usage_page() {
  curl -sf -u alice:alice-pw "$BERTH_URL/admin/v1/usage?n=2" | python3 -c 'import json,sys
r = json.load(sys.stdin)
names = [x["name"] for x in r["repositories"]]
assert names == ["gc/drop", "gc/keep"] and r["next"] == "gc/keep", r
keep = r["repositories"][1]
assert (keep["tags"], keep["manifests"]) == (1, 1) and keep["bytes"] > 0, keep
assert r["stored"]["blobs"] == int(sys.argv[1]) and r["stored"]["bytes"] > 0, (r["stored"], sys.argv[1])' "$(blob_files)"
}
check "the usage page lists repositories with tags, manifests and bytes, and what is stored" usage_page
check "the next page starts after the last" bash -c \
  "curl -sf -u alice:alice-pw '$BERTH_URL/admin/v1/usage?n=2&last=gc/keep' | grep -q '\"name\":\"gc/ret\"'"
check "bob, not granted admin, may not read it" equal \
  "$(curl -s -o /dev/null -w '%{http_code}' -u bob:bob-pw "$BERTH_URL/admin/v1/usage")" 403
check "n out of range is a 400" equal \
  "$(curl -s -o /dev/null -w '%{http_code}' -u alice:alice-pw "$BERTH_URL/admin/v1/usage?n=0")" 400

echo "== scrub"
# An object no metadata knows, written two days ago (a crash between an upload's write and its
# record); and the bytes of gc/keep's first layer changed underneath.
ORPHAN=$(printf 'left behind' | sha256sum | cut -d' ' -f1)
ORPHAN_FILE="$BERTH_DIR/data/storage/blobs/sha256/${ORPHAN:0:2}/$ORPHAN"
LAYER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' \
  "$WORK/layout/blobs/sha256/${MULTI#sha256:}")
planted() {
  mkdir -p "$(dirname "$ORPHAN_FILE")" && printf 'left behind' >"$ORPHAN_FILE" &&
    touch -d '2 days ago' "$ORPHAN_FILE" &&
    overwrite_object "$BERTH_DIR/data" "blobs/sha256/${LAYER:7:2}/${LAYER#sha256:}" 'bit rot'
}
scrub_dry() {
  local out
  out=$(gc --verify --dry-run) && echo "$out" &&
    grep -q 'scrub: [0-9]* objects, would remove 1 orphans (11 B) and 0 stale upload objects; [0-9]* blobs verified, 1 corrupt' <<<"$out" &&
    grep -q "corrupt: $LAYER 7 bytes stored" <<<"$out" && test -f "$ORPHAN_FILE"
}
scrub_real() {
  local out
  out=$(gc --scrub) && echo "$out" && grep -q 'removed 1 orphans' <<<"$out" && ! test -f "$ORPHAN_FILE"
}
corrupt_counted() {
  gc --verify >/dev/null && curl -sf "$BERTH_URL/metrics" | grep -q '^berth_gc_corrupt_blobs_total 1$'
}
check "an old orphan and a corrupted layer are planted in the data directory" planted
check "a verifying dry run names the orphan and the corrupt layer, and removes nothing" scrub_dry
check "a scrub removes the orphan" scrub_real
check "a verifying run counts the corrupt blob in the metrics" corrupt_counted

echo "== review queue"
# A second berth that reviews its queue every second, with no grace: a delete queues its
# repository, and berth's own review removes what the delete left behind; with nothing due it
# starts no run at all.
cat >"$WORK/review.yml" <<YAML
auth:
  htpasswd: $WORK/htpasswd
  rules: [{ users: [alice], repositories: ["**"], actions: [pull, push, delete, admin] }]
retention:
  review_every: 1s
  review_grace: 0s
YAML
start_berth --config "$WORK/review.yml"
R=$BERTH_ADDR
metric() { curl -sf "$BERTH_URL/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
reviews() { # the reviews logged: their count, then each one's graceSeconds and state
  curl -sf -u alice:alice-pw "$BERTH_URL/admin/v1/gc/runs?n=100&queued=true" | python3 -c 'import json,sys
runs = json.load(sys.stdin)["runs"]
print(len(runs), *sorted({(r["graceSeconds"], r["state"]) for r in runs if r["state"] != "running"}))'
}
reviewed_by_itself() {
  push multi gc/q1:v1 && push multi gc/q2:v1 && push multi gc/q2:v2 &&
    "$CRANE" auth login "$R" -u alice -p alice-pw >/dev/null 2>&1 &&
    "$CRANE" --insecure delete "$R/gc/q2@$MULTI" || return 1
  local i
  # Notes are written within 10 s; the next review then unlinks the image's 4 blobs.
  for i in $(seq 1 40); do
    [[ $(metric 'berth_gc_removed_total{kind="link"}') == 4 && $(metric berth_gc_queue_depth) == 0 ]] && break
    sleep 1
  done
  equal "$(metric 'berth_gc_removed_total{kind="link"}')" 4 && equal "$(metric berth_gc_queue_depth)" 0 &&
    equal "$(reviews | cut -d' ' -f2-)" "(0, 'succeeded')"
}
idle_reviews_skip() {
  local before after
  before=$(reviews | cut -d' ' -f1) && sleep 4 && after=$(reviews | cut -d' ' -f1) && equal "$after" "$before" &&
    curl -sf -u alice:alice-pw "$BERTH_URL/admin/v1/gc/runs?queued=false" | python3 -c 'import json,sys
assert json.load(sys.stdin)["runs"] == [], "no full run was asked for"'
}
queued_run() {
  local out
  out=$(gc --queued --output json) && echo "$out" | python3 -c 'import json,sys
r = json.load(sys.stdin)
assert r["repositories"] == [] and r["linksRemoved"] == 0, r'
}
check "berth reviews a delete by itself, with the configured grace, and empties its queue" reviewed_by_itself
check "with nothing queued, reviews start no run" idle_reviews_skip
check "a run over the empty queue finds nothing to remove" queued_run

finish
