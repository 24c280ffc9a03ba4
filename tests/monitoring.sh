#!/usr/bin/env bash
# The chart's alerts and dashboard. Its PrometheusRule, rendered by helm, passes `promtool check
# rules`, and `promtool test rules` (tests/monitoring/alerts-test.yml) sees each alert fire where
# it should and stay silent where it should not. A real Prometheus scrapes real berths under a
# short load (pushes replicated on push, webhooks, pulls through the cache from an upstream that
# reports its rate limit, a garbage collection, failed logins), and every query of every panel
# of the Grafana dashboard, rendered by helm, returns data; every metric the rules and the
# dashboard name is one berth exposes.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"

HELM=$(tool_path helm)
require_tools "$HELM"
require_commands promtool prometheus

WORK=$(mktemp -d)
on_exit "rm -rf $WORK"

rendered() {
  "$HELM" template berth "$ROOT/charts/berth-operator" --kube-version 1.31.0 \
    --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml >"$WORK/rule.yaml" &&
    python3 - "$WORK/rule.yaml" "$WORK/alerts.yml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", rule["kind"]
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[2], "w"))
PY
}
check "helm renders the PrometheusRule" rendered
check "promtool check rules: the rules are valid" promtool check rules "$WORK/alerts.yml"
unit_tests() {
  cp "$ROOT/tests/monitoring/alerts-test.yml" "$WORK/" && (cd "$WORK" && promtool test rules alerts-test.yml)
}
check "promtool test rules: each alert fires, and stays silent, as its cases say" unit_tests

# The berths Prometheus scrapes: UP, an upstream (behind ratelimited_upstream.py, which says how
# many pulls are left as Docker Hub does); EDGE, a replication destination that wants a login;
# MAIN, a pull-through cache of UP that copies its pushes of team/** to EDGE and sends webhooks.
start_limited_upstream || exit 1

htpasswd_users alice
cat >"$WORK/edge.yml" <<YAML
auth:
  htpasswd: $WORK/htpasswd
  rules: [{ users: [alice], repositories: ["**"], actions: [pull, push] }]
YAML
start_berth --config "$WORK/edge.yml" || exit 1
EDGE=$BERTH_ADDR
mkdir -p "$WORK/edge-creds"
printf 'alice\n' >"$WORK/edge-creds/username"
printf 'alice-pw\n' >"$WORK/edge-creds/password"

RECEIVER_PORT=$(free_port)
printf 'a-webhook-secret\n' >"$WORK/hook-secret"
python3 "$ROOT/tests/webhook_receiver.py" "$RECEIVER_PORT" "$WORK/hook-secret" "$WORK/received.jsonl" \
  >"$WORK/receiver.log" 2>&1 &
on_exit "kill $!"
cat >"$WORK/main.yml" <<YAML
proxy:
  upstreams:
    - { name: docker.io, url: "http://$LIMITED", default: true, include: ["library/**"] }
replication:
  on_push:
    - { name: edge, destination: "http://$EDGE", credentials_dir: $WORK/edge-creds, repositories: ["team/**"] }
notifications:
  endpoints:
    - { name: scanner, url: "http://127.0.0.1:$RECEIVER_PORT/", secret_file: $WORK/hook-secret }
YAML
start_berth --config "$WORK/main.yml" || exit 1
MAIN_URL=$BERTH_URL

# Names berth exposes (counters are read with _total, histograms with _bucket).
exposed() {
  curl -fsS "$MAIN_URL/metrics" | awk '/^# TYPE/ {
    print $3
    if ($4 == "counter") print $3 "_total"
    if ($4 == "histogram") { print $3 "_bucket"; print $3 "_sum"; print $3 "_count" } }' | sort -u
}
# named_metrics_exist FILE: every berth_* name in FILE is exposed.
named_metrics_exist() {
  local missing
  missing=$(comm -23 <(grep -o 'berth_[a-z_]*' "$1" | sort -u) <(exposed))
  [[ -z $missing ]] || { echo "$1 names metrics berth does not expose: $missing"; return 1; }
}
check "every metric the rules name is one berth exposes" named_metrics_exist "$WORK/alerts.yml"

dashboard() {
  "$HELM" template berth "$ROOT/charts/berth-operator" --kube-version 1.31.0 \
    --set grafanaDashboard.enabled=true --show-only templates/grafana-dashboard.yaml >"$WORK/dashboard.yaml" &&
    python3 - "$WORK/dashboard.yaml" "$WORK/dashboard.json" <<'PY2'
import sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1", cm["metadata"]
open(sys.argv[2], "w").write(cm["data"]["berth.json"])
PY2
}
check "helm renders the dashboard's ConfigMap, labelled for Grafana's sidecar" dashboard
check "the dashboard is well formed (variables, ids, layout, data source, filters)" \
  python3 "$ROOT/tests/monitoring/panels.py" check "$WORK/dashboard.json"
check "every metric the dashboard names is one berth exposes" named_metrics_exist "$WORK/dashboard.json"

PROM_PORT=$(free_port)
PROM=http://127.0.0.1:$PROM_PORT
cat >"$WORK/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: berth
    static_configs: [{targets: ["$UP", "$EDGE", "$BERTH_ADDR"]}]
YAML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
on_exit "kill $!"
wait_for "$PROM/-/ready" 30

echo "== a short load"
pushed() {
  python3 "$ROOT/tests/push_many.py" "$MAIN_URL" team/app 0 3 "$WORK/acked" &&
    python3 "$ROOT/tests/push_many.py" "http://$UP" library/app 0 1 "$WORK/acked-up"
}
check "pushes: three to MAIN (copied to EDGE, announced by webhook), one to the upstream" pushed
OCI=application/vnd.oci.image.manifest.v1+json
pulled_twice() {
  local layer
  for _ in 1 2; do
    layer=$(curl -fsS -H "Accept: $OCI" "$MAIN_URL/v2/library/app/manifests/t0" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["layers"][0]["digest"])') &&
      curl -fsS -o /dev/null "$MAIN_URL/v2/library/app/blobs/$layer" || return 1
  done
}
check "a pull through the cache, twice (a miss, then a hit)" pulled_twice
broken_upstream() {
  equal "$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $OCI" "$MAIN_URL/v2/library/broken/app/manifests/v1")" 502
}
check "a pull of what the upstream fails to serve is refused" broken_upstream
for i in $(seq 20); do
  curl -s -o /dev/null "$MAIN_URL/v2/"
  curl -s -o /dev/null "$MAIN_URL/v2/load/app/manifests/missing-$i"
  curl -s -o /dev/null -u alice:wrong "http://$EDGE/v2/"
done
collected() {
  curl -fsS -o /dev/null -X DELETE "$MAIN_URL/v2/team/app/manifests/t2" &&
    "$BERTH_BIN" gc --url "$MAIN_URL" --grace 0s | tee "$WORK/gc.out" && grep -q 'remove' "$WORK/gc.out"
}
check "a tag deleted, and a garbage collection removes its manifest" collected

# query EXPR: the values of an instant query, one per line.
query() {
  curl -fsS --get "$PROM/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json, sys; [print(r["value"][1]) for r in json.load(sys.stdin)["data"]["result"]]'
}
volume_used() {
  local v
  v=$(query '1 - berth_storage_volume_available_bytes / berth_storage_volume_size_bytes' | head -1)
  [[ -n $v ]] && python3 -c "assert 0 < $v < 1, $v"
}
check "Prometheus reads the data volume's use from berth (a ratio between 0 and 1)" eventually 30 volume_used
requests_rated() { [[ -n $(query 'sum by (job, status) (rate(berth_http_requests_total[30s]))') ]]; }
check "and the request rates the error alert divides" eventually 30 requests_rated

echo "== every panel of the dashboard shows data"
mapfile -t PANELS < <(python3 "$ROOT/tests/monitoring/panels.py" list "$WORK/dashboard.json")
[[ ${#PANELS[@]} -gt 20 ]] || check "the dashboard has its panels" false
for line in "${PANELS[@]}"; do
  check "panel \"${line#*$'\t'}\" shows data" \
    eventually 60 python3 "$ROOT/tests/monitoring/panels.py" query "$WORK/dashboard.json" "$PROM" "${line%%$'\t'*}"
done

finish
