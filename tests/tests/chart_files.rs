//! The Helm chart's static files against the rest of the repository: the chart's CRD is the
//! generated one byte for byte, and every metric the Grafana dashboard and the alert rules
//! query is one the sidecar (CONTRACT §2.6) or the operator (docs/metrics.md) exports. Every
//! alert's runbook link names a section of docs/runbook.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `poolwarden_...` identifier in `text`, in order of appearance.
fn metric_names(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find("poolwarden_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            out.push(text[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    out
}

/// The names in the first column of the markdown table rows "| `poolwarden_...` | type | ..."
/// between the heading starting with `heading` and the next heading of the same or a higher
/// level. Returns (name, type) pairs.
fn table_metrics(markdown: &str, heading: &str) -> Vec<(String, String)> {
    let level = heading.chars().take_while(|&c| c == '#').count();
    let mut inside = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.starts_with('#') {
            let this_level = line.chars().take_while(|&c| c == '#').count();
            if line.starts_with(heading) {
                inside = true;
                continue;
            }
            if inside && this_level <= level {
                break;
            }
        }
        if !inside {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 3 && cells[1].starts_with("`poolwarden_") {
            out.push((cells[1].trim_matches('`').to_string(), cells[2].to_string()));
        }
    }
    assert!(!out.is_empty(), "no metric table under {heading:?}");
    out
}

/// The project's CONTRACT.md: `POOLWARDEN_CONTRACT` or `../shared/CONTRACT.md` beside the
/// checkout (where the project's sessions and CI lay it).
fn contract() -> String {
    let path = std::env::var_os("POOLWARDEN_CONTRACT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/CONTRACT.md"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "read CONTRACT.md at {} (set POOLWARDEN_CONTRACT): {e}",
            path.display()
        )
    })
}

/// Every metric series name a query may use: the documented names, and for histograms their
/// `_bucket`, `_sum` and `_count` series.
fn known_series() -> BTreeSet<String> {
    let doc = read("docs/metrics.md");
    let mut known = BTreeSet::new();
    for heading in ["## Sidecar", "## Operator"] {
        for (name, kind) in table_metrics(&doc, heading) {
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.insert(format!("{name}{suffix}"));
                }
            } else {
                known.insert(name);
            }
        }
    }
    known
}

#[test]
fn chart_crd_is_the_generated_crd_byte_for_byte() {
    let generated =
        std::fs::read(repo_root().join("crds/dbpoolpolicies.poolwarden.dev.yaml")).unwrap();
    let in_chart = std::fs::read(
        repo_root().join("charts/poolwarden/crds/dbpoolpolicies.poolwarden.dev.yaml"),
    )
    .unwrap();
    assert!(
        generated == in_chart,
        "charts/poolwarden/crds/dbpoolpolicies.poolwarden.dev.yaml differs from \
         crds/dbpoolpolicies.poolwarden.dev.yaml: copy it \
         (cp crds/dbpoolpolicies.poolwarden.dev.yaml charts/poolwarden/crds/)"
    );
    let entries: Vec<_> = std::fs::read_dir(repo_root().join("charts/poolwarden/crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        entries,
        ["dbpoolpolicies.poolwarden.dev.yaml"],
        "only the generated CRD in the chart's crds/"
    );
}

#[test]
fn sidecar_metric_reference_is_contract_section_2_6() {
    let contract = contract();
    let mut from_contract = table_metrics(&contract, "### 2.6");
    let mut from_doc = table_metrics(&read("docs/metrics.md"), "## Sidecar");
    from_contract.sort();
    from_doc.sort();
    assert_eq!(
        from_doc, from_contract,
        "docs/metrics.md's sidecar table must list CONTRACT §2.6's names and types"
    );
}

#[test]
fn operator_metric_reference_pins_the_operator_names() {
    let doc: BTreeSet<String> = table_metrics(&read("docs/metrics.md"), "## Operator")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let pinned = [
        "poolwarden_operator_reconciles_total",
        "poolwarden_operator_reconcile_failures_total",
        "poolwarden_operator_reconcile_duration_seconds",
        "poolwarden_operator_scale_decisions_total",
        "poolwarden_operator_pool_size",
        "poolwarden_operator_max_overflow",
        "poolwarden_operator_budget_per_pod_limit",
        "poolwarden_operator_budget_limited",
        "poolwarden_operator_at_max_pool_size",
        "poolwarden_operator_pool_utilization_ratio",
        "poolwarden_operator_pods_unreachable",
    ];
    assert_eq!(
        doc,
        pinned
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
}

/// Every string in a JSON document.
fn json_strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_parses_and_queries_only_documented_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("charts/poolwarden/files/dashboard.json"))
            .expect("dashboard.json is JSON");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(dashboard["uid"], "poolwarden-pools");

    // Every query: panel targets, annotation queries and template variables.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_string()
        })
        .collect();
    let panel_queries = exprs.len();
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .expect("annotations")
    {
        if let Some(expr) = annotation["expr"].as_str() {
            exprs.push(expr.to_string());
        }
    }
    assert!(
        exprs.len() > panel_queries,
        "pool size changes are shown as an annotation query"
    );
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = variable["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }

    let known = known_series();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                known.contains(&name),
                "dashboard queries {name}, which docs/metrics.md does not list: {expr}"
            );
            used.insert(name);
        }
    }
    // Nothing else in the JSON (titles, descriptions, legends) names an unknown metric either.
    let mut strings = Vec::new();
    json_strings(&dashboard, &mut strings);
    for s in strings {
        for name in metric_names(s) {
            assert!(
                known.contains(&name),
                "dashboard mentions {name}, which docs/metrics.md does not list"
            );
        }
    }

    // The panels the issue asks for.
    for needed in [
        "poolwarden_pool_utilization_ratio",
        "poolwarden_pool_size",
        "poolwarden_pool_checked_out_connections",
        "poolwarden_pool_waiting_clients",
        "poolwarden_pool_wait_seconds_bucket",
        "poolwarden_pool_timeouts_total",
        "poolwarden_breaker_state",
        "poolwarden_operator_pool_size",
        "poolwarden_operator_budget_per_pod_limit",
        "poolwarden_operator_budget_limited",
    ] {
        assert!(used.contains(needed), "the dashboard shows {needed}");
    }
    assert!(
        exprs.iter().any(|e| e.contains("histogram_quantile(")
            && e.contains("poolwarden_pool_wait_seconds_bucket")),
        "wait-time quantiles come from the histogram"
    );
}

/// GitHub-style anchor of a markdown heading: lower case, spaces to '-', punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn alert_rules_query_documented_metrics_and_link_the_runbook() {
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read("charts/poolwarden/files/alerts.yaml"))
            .expect("alerts.yaml is YAML");
    let runbook = read("docs/runbook.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(anchor)
        .collect();
    let known = known_series();

    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string();
            let expr = rule["expr"].as_str().expect("expr");
            for metric in metric_names(expr) {
                assert!(
                    known.contains(&metric),
                    "{name} queries {metric}, which docs/metrics.md does not list"
                );
            }
            let severity = rule["labels"]["severity"].as_str().expect("severity label");
            assert!(
                ["warning", "critical"].contains(&severity),
                "{name}: severity {severity}"
            );
            assert!(
                rule["annotations"]["summary"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{name}: summary"
            );
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .expect("runbook_url");
            let (page, fragment) = url.split_once('#').expect("runbook_url has a #section");
            assert!(page.ends_with("docs/runbook.md"), "{name}: {url}");
            assert_eq!(
                fragment,
                name.to_lowercase(),
                "{name}: the runbook section is named after the alert"
            );
            assert!(
                anchors.contains(fragment),
                "{name}: docs/runbook.md has no section #{fragment}"
            );
            alerts.insert(name);
        }
    }
    for needed in [
        "PoolwardenPoolUtilizationHigh",
        "PoolwardenPoolUtilizationCritical",
        "PoolwardenBreakerOpen",
        "PoolwardenPoolTimeouts",
        "PoolwardenConnectionBudgetLimited",
        "PoolwardenPoolAtMaxPoolSize",
    ] {
        assert!(alerts.contains(needed), "alert {needed} is defined");
    }
}

#[test]
fn metric_names_finds_whole_identifiers_only() {
    assert_eq!(
        metric_names(
            "sum(rate(poolwarden_a_total[5m])) / x_poolwarden_b + poolwarden_c{x=\"poolwarden_d\"}"
        ),
        ["poolwarden_a_total", "poolwarden_c", "poolwarden_d"]
    );
    assert_eq!(
        anchor("### PoolwardenPoolUtilizationHigh"),
        "poolwardenpoolutilizationhigh"
    );
    assert_eq!(
        anchor("## Reading `kubectl describe dbpp`"),
        "reading-kubectl-describe-dbpp"
    );
}
