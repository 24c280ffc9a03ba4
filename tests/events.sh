#!/usr/bin/env bash
# Events and webhooks end to end: every acknowledged push reaches the receiver although the
# registry is SIGKILLed in the middle of 500 pushes, a receiver that was down gets everything
# once it is back, duplicates carry the same id, signatures verify with the right secret (and
# are detectably wrong with another), the Distribution envelope reads as registry:2's, pulls (also
# through the pull-through cache) reach only the endpoint that asks for them, and the admin API
# lists the audit log.
source "$(dirname "$0")/lib.sh"

WORK=$(mktemp -d)
on_exit "rm -rf $WORK"
PUSHES=${EVENT_PUSHES:-500}

RECEIVER_PORT=$(free_port)
printf 's3cret-for-the-receiver\n' >"$WORK/secret"
printf 'another-secret\n' >"$WORK/wrong-secret"
start_receiver() {
  python3 "$ROOT/tests/webhook_receiver.py" "$RECEIVER_PORT" "$WORK/secret" "$WORK/received.jsonl" \
    >>"$WORK/receiver.log" 2>&1 &
  RECEIVER_PID=$!
  on_exit "kill $RECEIVER_PID"
  wait_for "http://127.0.0.1:$RECEIVER_PORT/" 10
}

# An upstream the registry caches as docker.io: pulls through the cache are pull events too.
start_berth || exit 1
UPSTREAM=$BERTH_URL
PORT=$(free_port)
ADDR=127.0.0.1:$PORT
URL=http://$ADDR
cat >"$WORK/berth.yml" <<YAML
listen: $ADDR
data_dir: $WORK/data
proxy:
  upstreams:
    - { name: docker.io, url: "$UPSTREAM", include: ["library/**"] }
notifications:
  endpoints:
    - name: scanner
      url: http://127.0.0.1:$RECEIVER_PORT/cloudevents
      secret_file: $WORK/secret
      events: [push, tag_delete, delete]
      backoff: 200ms
      max_attempts: 100
    - name: legacy
      url: http://127.0.0.1:$RECEIVER_PORT/distribution
      secret_file: $WORK/wrong-secret
      format: distribution
      repositories: ["events/legacy"]
      backoff: 200ms
      max_attempts: 100
    - name: pulls
      url: http://127.0.0.1:$RECEIVER_PORT/pulls
      secret_file: $WORK/secret
      events: [pull]
      repositories: ["events/pulled", "docker.io/**"]
      backoff: 200ms
      max_attempts: 100
YAML
start_registry() {
  "$BERTH_BIN" serve --config "$WORK/berth.yml" >>"$WORK/berth.log" 2>&1 &
  BERTH_PID=$!
  on_exit "kill -9 $BERTH_PID"
  wait_for "$URL/v2/" 30
}

start_receiver
start_registry

# What the receiver got, as `<path> <signed> <type or action> <repository> <tag> <digest> <id>`.
received() {
  python3 - "$WORK/received.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    b = r["body"]
    if "specversion" in b:
        d = b["data"]
        print(r["path"], r["signed"], b["type"], d["repository"], d.get("tag", "-"), d.get("digest", "-"), b["id"])
    else:
        for e in b["events"]:
            t = e["target"]
            print(r["path"], r["signed"], e["action"], t["repository"], t.get("tag", "-"), t.get("digest", "-"), e["id"])
PY
}

# missing_pushes ACKED REPOSITORY: how many acknowledged pushes have no signed pushed event.
missing_pushes() {
  touch "$WORK/received.jsonl"
  comm -23 <(sort -u "$1") \
    <(received | awk -v r="$2" '$1 == "/cloudevents" && $2 == "True" && $3 == "dev.berth.manifest.pushed" && $4 == r {print $5, $6}' | sort -u) | wc -l
}
all_arrived() { (($(missing_pushes "$@") == 0)); }
# every_push_arrived ACKED REPOSITORY: each acknowledged push has a signed pushed event.
every_push_arrived() {
  eventually 90 all_arrived "$@" ||
    { echo "$(missing_pushes "$@") of $(wc -l <"$1") acknowledged pushes never arrived"; return 1; }
}

echo "== $PUSHES pushes, the registry SIGKILLed and restarted in the middle"
python3 "$ROOT/tests/push_many.py" "$URL" events/app 0 "$PUSHES" "$WORK/acked" 2>"$WORK/pusher.log" &
PUSHER=$!
on_exit "kill $PUSHER"
a_third_acked() { (($(cat "$WORK/acked" 2>/dev/null | wc -l) >= PUSHES / 3)); }
eventually 120 a_third_acked
kill -9 "$BERTH_PID"
wait "$BERTH_PID" 2>/dev/null
killed_at=$(wc -l <"$WORK/acked")
start_registry
wait "$PUSHER"
check "the pusher finished every push across the restart" \
  equal "$(wc -l <"$WORK/acked") (killed after $killed_at)" "$PUSHES (killed after $killed_at)"
check "every acknowledged push's event arrived, signed" every_push_arrived "$WORK/acked" events/app
dupes() {
  received | awk '$1 == "/cloudevents" {print $7}' | sort | uniq -d | wc -l
}
ids_name_one_push_each() {
  # Copies of one event share its id and say the same; a push the kill cut off before its answer
  # (committed, then sent again by the client) is a push of its own, with an id of its own.
  local ids pushes
  ids=$(received | awk '$1 == "/cloudevents" && $4 == "events/app" && $3 == "dev.berth.manifest.pushed" {print $7}' | sort -u | wc -l)
  pushes=$(sort -u "$WORK/acked" | wc -l)
  ((ids >= pushes && ids <= pushes + 3)) || { echo "$ids distinct ids for $pushes pushes"; return 1; }
  equal "$(received | awk '$1 == "/cloudevents" {print $7, $3, $4, $5, $6}' | sort -u | awk '{print $1}' | uniq -d | wc -l)" 0
}
check "each event id names one push (duplicates, if any, are copies: $(dupes) seen)" ids_name_one_push_each

echo "== a receiver that is down gets everything once it is back"
kill "$RECEIVER_PID"
wait "$RECEIVER_PID" 2>/dev/null
python3 "$ROOT/tests/push_many.py" "$URL" events/later 0 20 "$WORK/acked-later" 2>>"$WORK/pusher.log"
curl -fsS -X DELETE "$URL/v2/events/later/manifests/t0" -o /dev/null
scanner_pending() {
  curl -fsS "$URL/admin/v1/webhooks" | python3 -c 'import json,sys; print(sum(e["pending"] for e in json.load(sys.stdin)["endpoints"] if e["endpoint"] == "scanner"))'
}
all_pending() { (($(scanner_pending) >= 21)); }
pending_while_down() { eventually 20 all_pending || { echo "pending: $(scanner_pending)"; return 1; }; }
check "deliveries wait while the receiver is down (admin API shows them pending)" pending_while_down
# Why they wait, before anything is dead: the oldest one's attempts and last error, its age as a
# gauge, and a warning in the log (tallied, not one line per attempt).
scanner_oldest() {
  curl -fsS "$URL/admin/v1/webhooks" | python3 -c '
import json, sys
for e in json.load(sys.stdin)["endpoints"]:
    if e["endpoint"] == "scanner" and e["oldestPending"]:
        o = e["oldestPending"]
        print(o["attempts"] >= 1, o["lastError"])'
}
tried_and_refused() { scanner_oldest | grep -q "^True the endpoint could not be reached: .*[Cc]onnection refused"; }
# Within a lease (10 s timeout + 15 s) and a backoff: the oldest may be a delivery the SIGKILLed
# berth had claimed, tried again only once its claim expires.
why_it_waits() { eventually 60 tried_and_refused || { echo "oldest pending: $(scanner_oldest)"; return 1; }; }
check "the admin API says why: the oldest delivery's attempts and 'connection refused'" why_it_waits
oldest_aged() {
  curl -fsS "$URL/metrics" | awk '$1 == "berth_webhook_oldest_pending_seconds{endpoint=\"scanner\"}" && $2 >= 1 {f = 1} END {exit !f}'
}
check "berth_webhook_oldest_pending_seconds ages the oldest waiting event" eventually 20 oldest_aged
logged_failures() {
  grep 'deliveries failed and wait to be retried' "$WORK/berth.log" | grep scanner | grep -qi 'connection refused'
}
check "the log warns that scanner's deliveries fail, with the error" eventually 10 logged_failures
start_receiver
check "after it came back: all 20 pushes arrived" every_push_arrived "$WORK/acked-later" events/later
tag_delete_received() {
  received | awk '$3 == "dev.berth.tag.deleted" && $4 == "events/later" && $5 == "t0" {found=1} END {exit !found}'
}
tag_deleted() {
  eventually 30 tag_delete_received || { echo "no dev.berth.tag.deleted event for events/later:t0"; return 1; }
}
check "and the tag's deletion, with the digest it named" tag_deleted

echo "== the Distribution envelope, and a signature made with another secret"
python3 "$ROOT/tests/push_many.py" "$URL" events/legacy 0 3 "$WORK/acked-legacy" 2>>"$WORK/pusher.log"
legacy_received() { received | awk '$1 == "/distribution" && $3 == "push" && $4 == "events/legacy" {print $5, $6}' | sort -u; }
all_legacy() { [[ $(legacy_received) == "$(sort -u "$WORK/acked-legacy")" ]]; }
legacy_envelopes() { eventually 30 all_legacy || { echo "got: $(legacy_received)"; return 1; }; }
check "registry:2-style envelopes: action push, target repository, tag and digest" legacy_envelopes
check "a signature made with another secret does not verify" \
  equal "$(received | awk '$1 == "/distribution" && $2 == "True"' | wc -l)" 0
check "the endpoint's repository filter kept events/app out of it" \
  equal "$(received | awk '$1 == "/distribution" && $4 != "events/legacy"' | wc -l)" 0

echo "== pulls, only for the endpoint that asks for them"
python3 "$ROOT/tests/push_many.py" "$URL" events/pulled 0 1 "$WORK/acked-pulled" 2>>"$WORK/pusher.log"
pull() { curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$@"; }
pulled_events() { # the pull events received: `<path> <signed> <repository> <tag> <digest> <count>`
  python3 - "$WORK/received.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    b = r["body"]
    if b.get("type") == "dev.berth.manifest.pulled" or any(e.get("action") == "pull" for e in b.get("events", [])):
        d = b.get("data", {})
        print(r["path"], r["signed"], d.get("repository"), d.get("tag", "-"), d.get("digest"), d.get("count"))
PY
}
pulls_counted() {
  for _ in 1 2 3; do pull "$URL/v2/events/pulled/manifests/t0" || return 1; done
  curl -fsS -o /dev/null -I "$URL/v2/events/pulled/manifests/t0" &&
    pull "$URL/v2/events/pulled/manifests/$(awk '{print $2}' "$WORK/acked-pulled")" &&
    python3 "$ROOT/tests/push_many.py" "$URL" events/other 0 1 "$WORK/acked-other" 2>>"$WORK/pusher.log" &&
    pull "$URL/v2/events/other/manifests/t0" &&
    eventually 30 bash -c "[[ \$(pulled_events_sum t0) == 3 && \$(pulled_events_sum -) == 1 ]]"
}
pulled_events_sum() { pulled_events | awk -v t="$1" '$1 == "/pulls" && $2 == "True" && $3 == "events/pulled" && $4 == t {s += $6} END {print s + 0}'; }
export -f pulled_events pulled_events_sum
export WORK
check "3 pulls by tag and 1 by digest arrive as pull events with their counts (a HEAD is no pull)" pulls_counted
nothing_pending() {
  (($(curl -fsS "$URL/admin/v1/webhooks" | python3 -c 'import json,sys; print(sum(e["pending"] for e in json.load(sys.stdin)["endpoints"]))') == 0))
}
only_where_asked() {
  # A last pull is noted after every other: once its event arrived and nothing waits, whatever
  # else was noted has been written and sent.
  pull "$URL/v2/events/pulled/manifests/t0" &&
    eventually 30 bash -c "(( \$(pulled_events_sum t0) == 4 ))" &&
    eventually 30 nothing_pending &&
    equal "$(pulled_events | awk '$1 != "/pulls" || $3 != "events/pulled"' | wc -l)" 0
}
check "no other endpoint, and no other repository, hears of pulls" only_where_asked
through_cache() {
  # The first pull fetches from the upstream, the second is a hit: both are pulls.
  python3 "$ROOT/tests/push_many.py" "$UPSTREAM" library/busybox 0 1 "$WORK/acked-up" 2>>"$WORK/pusher.log" &&
    pull "$URL/v2/docker.io/library/busybox/manifests/t0" && pull "$URL/v2/docker.io/library/busybox/manifests/t0" &&
    eventually 30 bash -c "(( \$(pulled_events | awk '\$1 == \"/pulls\" && \$2 == \"True\" && \$3 == \"docker.io/library/busybox\" && \$4 == \"t0\" {s += \$6} END {print s + 0}') == 2 ))"
}
check "pulls through the pull-through cache (a miss, then a hit) arrive as pull events" through_cache

echo "== a rotated secret signs what follows, with no restart"
kill "$RECEIVER_PID"
wait "$RECEIVER_PID" 2>/dev/null
printf 'rotated-s3cret\n' >"$WORK/secret"
start_receiver
secret_reloaded() { grep -q "reloaded.*$WORK/secret\|$WORK/secret.*reloaded" "$WORK/berth.log"; }
signed_with_the_new_secret() {
  eventually 30 secret_reloaded || { echo "berth never re-read $WORK/secret"; return 1; }
  python3 "$ROOT/tests/push_many.py" "$URL" events/rotated 0 1 "$WORK/acked-rotated" 2>>"$WORK/pusher.log" &&
    eventually 30 rotated_push_verifies
}
rotated_push_verifies() { received | awk '$4 == "events/rotated" && $2 == "True" {ok=1} END {exit !ok}'; }
check "the secret file rewritten: berth re-reads it, and the next event verifies with the new secret" \
  signed_with_the_new_secret

echo "== the audit log and metrics"
audit() {
  curl -fsS "$URL/admin/v1/events?repository=events/later&n=5" | python3 -c '
import json, sys
events = json.load(sys.stdin)["events"]
assert events[0]["kind"] == "tag_delete" and events[0]["tag"] == "t0", events[0]
assert all(e["repository"] == "events/later" and e["address"] == "127.0.0.1" for e in events), events
assert len(events) == 5, len(events)
print("ok")'
}
check "GET /admin/v1/events lists the newest first, filtered by repository" audit
check "the admin API refuses a bad page size" \
  equal "$(curl -s -o /dev/null -w '%{http_code}' "$URL/admin/v1/events?n=0")" 400
delivered_metric() {
  curl -fsS "$URL/metrics" | grep -E '^berth_webhook_deliveries_total\{endpoint="scanner",outcome="delivered"\} [1-9]'
}
check "berth_webhook_deliveries_total counts deliveries per endpoint" delivered_metric

echo "== the audit log: failed logins and denied requests, tallied"
htpasswd_users root bob
cat >"$WORK/auth.yml" <<YAML
auth:
  htpasswd: $WORK/htpasswd
  failed_logins: { free: 100 }   # no backoff within this test: every refusal is heard
  rules:
    - { users: [root], repositories: ["**"], actions: [pull, push, delete, admin] }
    - { users: [bob], repositories: ["team/**"], actions: [pull] }
YAML
start_berth --config "$WORK/auth.yml"
for _ in $(seq 30); do curl -s -o /dev/null -u mallory:guess "$BERTH_URL/v2/"; done
curl -s -o /dev/null -u bob:bob-pw -X POST "$BERTH_URL/v2/team/app/blobs/uploads/"
curl -s -o /dev/null -u bob:bob-pw -X POST "$BERTH_URL/v2/team/app/blobs/uploads/"
tallies() { # the audit log's entries as `kind|actor|repository|detail|count`, summed
  curl -fsS -u root:root-pw "$BERTH_URL/admin/v1/events?n=50" | python3 -c '
import json, sys
tally = {}
for e in json.load(sys.stdin)["events"]:
    key = (e["kind"], e["actor"], e["repository"], e["detail"])
    tally[key] = tally.get(key, 0) + e["count"]
for key, n in sorted(tally.items()):
    print(*key, n, sep="|")'
}
tallied() {
  local got
  got=$(tallies)
  [[ $got == *"login_failed|mallory||wrong name or password|30"* && $got == *"denied|bob|team/app|POST push|2"* ]]
}
audit_entries() { eventually 20 tallied || { tallies; return 1; }; }
check "30 failed logins and 2 denied pushes are tallied into the audit log" audit_entries
entries_not_requests() {
  local rows
  rows=$(curl -fsS -u root:root-pw "$BERTH_URL/admin/v1/events?actor=mallory" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
  ((rows >= 1 && rows <= 3)) || { echo "$rows rows for 30 failed logins"; return 1; }
}
check "a row per interval, not per refused request" entries_not_requests
admin_action() {
  curl -fsS -u root:root-pw -X POST -d '{"dryRun": true}' "$BERTH_URL/admin/v1/gc" -o /dev/null || return 1
  curl -fsS -u root:root-pw "$BERTH_URL/admin/v1/events?actor=root&n=5" | python3 -c '
import json, sys
e = json.load(sys.stdin)["events"][0]
assert e["kind"] == "admin" and "started" in e["detail"] and "dry_run: true" in e["detail"], e
print("ok")'
}
check "an admin action (a dry-run collection started) is in the audit log at once" admin_action
# Three failed logins, then a stop well within the 5 s between writes: the tallies are written
# on the way out, and the registry started again lists them.
for _ in 1 2 3; do curl -s -o /dev/null -u eve:guess "$BERTH_URL/v2/"; done
kill -TERM "$BERTH_PID" && wait "$BERTH_PID"
"$BERTH_BIN" serve --listen "$BERTH_ADDR" --data-dir "$BERTH_DIR/data" --config "$WORK/auth.yml" >>"$BERTH_DIR/log" 2>&1 &
BERTH_PID=$!
on_exit "kill $BERTH_PID"
wait_for "$BERTH_URL/v2/" 20
eve_failures() {
  curl -fsS -u root:root-pw "$BERTH_URL/admin/v1/events?actor=eve" | python3 -c 'import json,sys; print(sum(e["count"] for e in json.load(sys.stdin)["events"]))'
}
check "failed logins just before a shutdown are written on the way out" equal "$(eve_failures)" 3
check "the audit log is for admins only" \
  equal "$(curl -s -o /dev/null -w '%{http_code}' -u bob:bob-pw "$BERTH_URL/admin/v1/events")" 403
finish
