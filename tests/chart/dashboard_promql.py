#!/usr/bin/env python3
"""Turn every PromQL query of the Grafana dashboard into a recording rule, so that
`promtool check rules` parses them (scripts/test-chart).

    dashboard_promql.py DASHBOARD.json RULES_OUT.yaml

Grafana's variables are replaced by values a query may hold: $__rate_interval by 5m, the
template variables by the regex .* .
"""
import json
import re
import sys

import yaml

with open(sys.argv[1]) as f:
    dash = json.load(f)
exprs = []
for p in dash["panels"]:
    exprs += [t["expr"] for t in p.get("targets", [])]
exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]


def concrete(e):
    e = e.replace("$__rate_interval", "5m")
    # label_values(metric, label) is Grafana's, not PromQL: check the selector inside it.
    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", e)
    if m:
        e = m.group(1)
    return re.sub(r"\$\w+", ".*", e)


rules = [{"record": f"poolwarden:dashboard_query_{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
with open(sys.argv[2], "w") as f:
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, sort_keys=False)
print(f"{len(rules)} dashboard queries")
