#!/usr/bin/env bash
# The alert rules and the dashboard that ship in deploy/:
# - `promtool check rules` on deploy/prometheus/*.rules.yaml (syntax, PromQL,
#   templates);
# - `promtool test rules` on deploy/prometheus/*.test.yaml (each alert fires
#   in one case and stays quiet in another);
# - each alert's severity (page or ticket), summary, and runbook_url naming
#   a heading of the docs;
# - deploy/grafana/*.json: valid JSON, each panel with a unique id and a
#   gridPos inside the 24 columns, no two panels overlapping, every query's
#   PromQL parsed by promtool (Grafana's variables replaced by examples).
# That every metric they name is exported is tests/api/metrics.rs's
# `every_metric_deploy_queries_is_exported`.
# promtool comes from ci/promtool.sh (Debian's prometheus package); without
# it this fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null; then
  echo "ci/prometheus-rules.sh: promtool is missing; run ci/promtool.sh (Debian's prometheus package)" >&2
  exit 1
fi

shopt -s nullglob
rules=(deploy/prometheus/*.rules.yaml)
tests=(deploy/prometheus/*.test.yaml)
dashboards=(deploy/grafana/*.json)
if [ ${#rules[@]} -eq 0 ] || [ ${#tests[@]} -eq 0 ] || [ ${#dashboards[@]} -eq 0 ]; then
  echo "ci/prometheus-rules.sh: no rules, rule tests or dashboards found in deploy/" >&2
  exit 1
fi

promtool check rules "${rules[@]}"
promtool test rules "${tests[@]}"

# Every alert's runbook_url is a heading of the docs (GitHub's anchors:
# lower case, spaces to '-', other punctuation dropped).
python3 - "${rules[@]}" <<'PY'
import re
import sys

fail, seen = [], 0
anchors = {}
for path in sys.argv[1:]:
    with open(path) as f:
        text = f.read()
    for alert in re.split(r"\n\s*- alert:", text)[1:]:
        name = alert.split()[0]
        url = re.search(r"runbook_url:\s*(\S+)", alert)
        severity = re.search(r"severity:\s*(\S+)", alert)
        seen += 1
        if not severity or severity.group(1) not in ("page", "ticket"):
            fail.append(f"{path}: {name}: severity is not page or ticket")
        if not re.search(r"summary:\s*\S", alert):
            fail.append(f"{path}: {name}: no summary")
        if not url or "#" not in url.group(1):
            fail.append(f"{path}: {name}: no runbook_url with an anchor")
            continue
        doc, anchor = url.group(1).split("#", 1)
        if doc not in anchors:
            try:
                with open(doc) as f:
                    prose = re.sub(r"^```.*?^```", "", f.read(), flags=re.M | re.S)
                headings = re.findall(r"^#+ (.+)$", prose, re.M)
            except OSError as e:
                fail.append(f"{path}: {name}: {e}")
                continue
            anchors[doc] = {
                re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                for h in headings
            }
        if anchor not in anchors[doc]:
            fail.append(f"{path}: {name}: {doc} has no heading for #{anchor}")
if fail or not seen:
    print("ci/prometheus-rules.sh:", *(fail or ["no alert found"]), sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"ci/prometheus-rules.sh: {seen} alerts, each with a severity, a summary and a runbook in the docs", file=sys.stderr)
PY

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for dashboard in "${dashboards[@]}"; do
  # The dashboard's queries as recording rules (JSON is YAML), for promtool
  # to parse.
  python3 - "$dashboard" "$work/queries.json" <<'PY'
import json
import sys

path, out = sys.argv[1], sys.argv[2]
fail = []
with open(path) as f:
    dashboard = json.load(f)
if not isinstance(dashboard.get("schemaVersion"), int):
    fail.append("no schemaVersion")
variables = {v.get("name"): v.get("type") for v in dashboard.get("templating", {}).get("list", [])}
if "datasource" not in variables.values():
    fail.append("no variable of type datasource")

panels = []
def walk(items):
    for panel in items:
        panels.append(panel)
        walk(panel.get("panels", []))
walk(dashboard.get("panels", []))

ids, cells, exprs = {}, {}, []
for panel in panels:
    title = panel.get("title", "?")
    pid = panel.get("id")
    if not isinstance(pid, int):
        fail.append(f"{title}: no id")
    elif pid in ids:
        fail.append(f"{title}: id {pid} is also {ids[pid]}'s")
    else:
        ids[pid] = title
    pos = panel.get("gridPos", {})
    if not all(isinstance(pos.get(k), int) for k in "hwxy"):
        fail.append(f"{title}: no whole gridPos")
        continue
    if pos["x"] < 0 or pos["w"] < 1 or pos["h"] < 1 or pos["x"] + pos["w"] > 24:
        fail.append(f"{title}: gridPos {pos} is outside the 24 columns")
    for x in range(pos["x"], pos["x"] + pos["w"]):
        for y in range(pos["y"], pos["y"] + pos["h"]):
            if (x, y) in cells:
                fail.append(f"{title}: overlaps {cells[(x, y)]}")
                break
            cells[(x, y)] = title
        else:
            continue
        break
    if panel.get("type") != "row":
        targets = panel.get("targets", [])
        if not targets:
            fail.append(f"{title}: no query")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                fail.append(f"{title}: an empty query")
            exprs.append(expr)

examples = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
            "${job}": "cobalt-receiver", "$job": "cobalt-receiver",
            "${instance}": ".*", "$instance": ".*"}
rules = []
for n, expr in enumerate(exprs):
    for name, value in examples.items():
        expr = expr.replace(name, value)
    if "$" in expr:
        fail.append(f"a query uses a variable this check does not know: {expr}")
    rules.append({"record": f"dashboard:query_{n}", "expr": expr})
with open(out, "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)

if fail:
    print(f"{path}:", *fail, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"{path}: {len(panels)} panels, {len(exprs)} queries", file=sys.stderr)
PY
  promtool check rules "$work/queries.json" >/dev/null ||
    { echo "ci/prometheus-rules.sh: a query of $dashboard does not parse (above)" >&2; exit 1; }
done
echo "ci/prometheus-rules.sh: rules checked and tested, dashboards checked" >&2
