//! The deployment files stay true: the Prometheus rules parse (promtool is
//! not available here), state the checklist's default thresholds, name only
//! metrics Ferry exports and link to a RUNBOOK section that exists; the
//! Grafana dashboard is valid JSON over exported metrics.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    rules: Vec<AlertRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn repo(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `ferry_*` metric names an expression uses, without the histogram
/// suffixes.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ferry_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_owned());
        rest = &tail[end..];
    }
    out
}

fn assert_exported(expr: &str, context: &str) {
    let names = metrics_in(expr);
    assert!(!names.is_empty(), "{context}: no ferry_ metric in {expr}");
    for name in names {
        assert!(
            ferry_common::metrics::ALL.contains(&name.as_str()),
            "{context}: {name} is not a metric Ferry exports"
        );
    }
}

#[test]
fn the_prometheus_rules_parse_and_use_only_exported_metrics() {
    let file: RuleFile = serde_norway::from_str(&repo("deploy/prometheus/ferry-alerts.yml"))
        .expect("ferry-alerts.yml is a valid rules file");
    let runbook = repo("RUNBOOK.md");
    let mut alerts = Vec::new();
    for group in &file.groups {
        assert!(!group.name.is_empty());
        for rule in &group.rules {
            assert_exported(&rule.expr, &rule.alert);
            assert!(rule.labels.contains_key("severity"), "{}", rule.alert);
            assert!(rule.annotations.contains_key("summary"), "{}", rule.alert);
            if let Some(f) = &rule.for_ {
                assert!(
                    f.ends_with('m') || f.ends_with('s'),
                    "{}: for {f}",
                    rule.alert
                );
            }
            let link = &rule.annotations["runbook"];
            let anchor = link.strip_prefix("RUNBOOK.md#").expect("a RUNBOOK link");
            assert!(
                runbook.contains(&format!("<a id=\"{anchor}\"></a>")),
                "{}: RUNBOOK.md has no section {anchor}",
                rule.alert
            );
            alerts.push(rule);
        }
    }
    let expr = |name: &str| {
        alerts
            .iter()
            .find(|r| r.alert == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .expr
            .clone()
    };
    // The checklist's defaults (common/src/config/load.rs).
    let defaults = ferry_common::Config::from_vars(Vec::<(String, String)>::new())
        .unwrap()
        .alerts;
    assert!(expr("FerryHighErrorRate").contains(&format!("> {}", defaults.error_rate)));
    assert!(
        expr("FerrySlowResponses")
            .contains(&format!("le=\"{}\"", defaults.response_time.as_secs()))
    );
    assert!(expr("FerryHighRequestRate").contains(&format!("> {}", defaults.requests_per_minute)));
}

#[test]
fn the_grafana_dashboard_is_json_over_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo("deploy/grafana/ferry.json")).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        let title = panel["title"].as_str().expect("a title");
        for target in panel["targets"].as_array().expect("targets") {
            assert_exported(target["expr"].as_str().expect("an expr"), title);
        }
    }
}
