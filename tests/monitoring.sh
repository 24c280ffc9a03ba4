#!/usr/bin/env bash
# The chart's alerts: its PrometheusRule, rendered by helm, passes `promtool check rules`, and
# `promtool test rules` (tests/monitoring/alerts-test.yml) sees each alert fire where it should
# and stay silent where it should not. Every metric the rules name is one berth exposes, and a
# real Prometheus scraping a real berth evaluates the storage and error expressions on its data.
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

start_berth
# Names berth exposes (counters are read with _total, histograms with _bucket).
exposed() {
  curl -fsS "$BERTH_URL/metrics" | awk '/^# TYPE/ {
    print $3
    if ($4 == "counter") print $3 "_total"
    if ($4 == "histogram") { print $3 "_bucket"; print $3 "_sum"; print $3 "_count" } }' | sort -u
}
named_metrics_exist() {
  local missing
  missing=$(comm -23 <(grep -o 'berth_[a-z_]*' "$WORK/alerts.yml" | sort -u) <(exposed))
  [[ -z $missing ]] || { echo "the rules name metrics berth does not expose: $missing"; return 1; }
}
check "every metric the rules name is one berth exposes" named_metrics_exist

PROM_PORT=$(free_port)
cat >"$WORK/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: berth
    static_configs: [{targets: ["$BERTH_ADDR"]}]
YAML
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
on_exit "kill $!"
wait_for "http://127.0.0.1:$PROM_PORT/-/ready" 30
# A short load: requests that succeed, and some that are refused.
for i in $(seq 20); do
  curl -s -o /dev/null "$BERTH_URL/v2/"
  curl -s -o /dev/null "$BERTH_URL/v2/load/app/manifests/missing-$i"
done
# query EXPR: the values of an instant query, one per line.
query() {
  curl -fsS --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json, sys; [print(r["value"][1]) for r in json.load(sys.stdin)["data"]["result"]]'
}
volume_used() {
  local v
  v=$(query '1 - berth_storage_volume_available_bytes / berth_storage_volume_size_bytes')
  [[ -n $v ]] && python3 -c "assert 0 < $v < 1, $v"
}
check "Prometheus reads the data volume's use from berth (a ratio between 0 and 1)" eventually 30 volume_used
requests_rated() { [[ -n $(query 'sum by (job, status) (rate(berth_http_requests_total[30s]))') ]]; }
check "and the request rates the error alert divides" eventually 30 requests_rated

finish
