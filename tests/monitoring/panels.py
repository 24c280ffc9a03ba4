"""The chart's Grafana dashboard, as Berth's monitoring test reads it.

Usage:
  panels.py check DASHBOARD          the dashboard is well formed (exits non-zero, saying why)
  panels.py list DASHBOARD           one line per panel: its index, a tab, its title
  panels.py query DASHBOARD PROMETHEUS_URL INDEX
                                     every query of panel INDEX returns data from that Prometheus

Queries are sent as Grafana sends them with every variable at "All": `$job` and `$instance`
become `.*`, `$__rate_interval` one minute.
"""

import json
import re
import sys
import urllib.parse
import urllib.request

SUBSTITUTIONS = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}

# Gauges every replica reports alike, read from the shared database or bucket: summed over
# replicas they count each thing once per replica, so a panel takes their max.
SHARED = [
    "berth_storage_stored_bytes",
    "berth_upload_sessions",
    "berth_webhook_pending",
    "berth_webhook_dead",
    "berth_webhook_oldest_pending_seconds",
    "berth_replication_pending",
    "berth_replication_dead",
    "berth_replication_oldest_pending_seconds",
]


def panels(dashboard):
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def check(dashboard):
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= names, f"variables: {names}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, f"{p['title']}: {g}"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel at {(x, y)}"
                cells.add((x, y))
    for p in panels(dashboard):
        assert p["datasource"]["uid"] == "${datasource}", f"{p['title']}: datasource {p['datasource']}"
        assert p.get("description"), f"{p['title']} has no description"
        assert p["targets"], f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["expr"] and t["datasource"]["uid"] == "${datasource}", f"{p['title']}: {t}"
            assert "$job" in t["expr"] and "$instance" in t["expr"], f"{p['title']}: no job/instance filter"
            for m in SHARED:
                summed = re.search(r"sum\s*(by\s*\([^)]*\)\s*)?\(\s*" + m + r"\b", t["expr"])
                assert not summed, f"{p['title']}: {m} is the same on every replica; take its max, not its sum"


def query(prometheus, expr):
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    url = prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        answer = json.load(resp)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def main():
    mode, dashboard = sys.argv[1], json.load(open(sys.argv[2]))
    if mode == "check":
        check(dashboard)
    elif mode == "list":
        for i, p in enumerate(panels(dashboard)):
            print(f"{i}\t{p['title']}")
    elif mode == "query":
        panel = panels(dashboard)[int(sys.argv[4])]
        empty = [t["expr"] for t in panel["targets"] if not query(sys.argv[3], t["expr"])]
        if empty:
            sys.exit("no data yet for: " + "; ".join(empty))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
