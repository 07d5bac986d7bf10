//! The deployment files stay true: the Prometheus rules parse (promtool is
//! not available here), state the checklist's default thresholds, name only
//! metrics Ferry exports and link to a RUNBOOK section that exists; the
//! Grafana dashboard is valid JSON over exported metrics; the Kubernetes
//! manifests (deploy/k8s, schema-checked by scripts/check-k8s) agree with
//! the code: probes on its routes and ports, a grace no shorter than the
//! workers', KEDA triggers on exactly the configured partitions' streams,
//! known variables only, and no secret value.

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

/// Every YAML document of deploy/k8s (and its examples/), with its file.
fn k8s_documents() -> Vec<(String, serde_norway::Value)> {
    let mut files = Vec::new();
    for dir in ["deploy/k8s", "deploy/k8s/examples"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        for entry in std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = repo(&file);
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
            if !value.is_null() {
                docs.push((file.clone(), value));
            }
        }
    }
    docs
}

fn find<'a>(
    docs: &'a [(String, serde_norway::Value)],
    kind: &str,
    name: &str,
) -> &'a serde_norway::Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("deploy/k8s has no {kind} {name}"))
}

fn string_map(value: &serde_norway::Value) -> Vec<(String, String)> {
    value
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let k = k.as_str().expect("a string key").to_owned();
                    let v = v.as_str().unwrap_or_else(|| panic!("{k}: a string value"));
                    (k, v.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pod's one container.
fn container(workload: &serde_norway::Value) -> &serde_norway::Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// What the container's process sees: the shared ConfigMap (envFrom),
/// then its own `env` (which wins). The Secret's keys are left out: their
/// values live in the cluster only.
fn container_env(
    docs: &[(String, serde_norway::Value)],
    workload: &serde_norway::Value,
) -> Vec<(String, String)> {
    let c = container(workload);
    let mut env = Vec::new();
    let sources = c["envFrom"].as_sequence().expect("envFrom");
    let config_maps: Vec<&str> = sources
        .iter()
        .filter_map(|s| s["configMapRef"]["name"].as_str())
        .collect();
    let secrets: Vec<&str> = sources
        .iter()
        .filter_map(|s| s["secretRef"]["name"].as_str())
        .collect();
    assert_eq!(config_maps, ["ferry-config"]);
    assert_eq!(secrets, ["ferry-env"]);
    env.extend(string_map(&find(docs, "ConfigMap", "ferry-config")["data"]));
    for var in c["env"]
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = var["name"].as_str().expect("an env name").to_owned();
        let value = var["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: a literal value (secrets come from ferry-env)"));
        env.retain(|(k, _)| *k != name);
        env.push((name, value.to_owned()));
    }
    env
}

fn config_of(env: &[(String, String)]) -> ferry_common::Config {
    ferry_common::Config::from_vars(env.to_vec()).expect("the manifests' settings load")
}

/// The container port a probe (or a Service) names, by name or number.
fn port_number(container: &serde_norway::Value, port: &serde_norway::Value) -> u16 {
    let ports = container["ports"].as_sequence().expect("ports");
    let found = match port {
        serde_norway::Value::String(name) => {
            ports.iter().find(|p| p["name"].as_str() == Some(name))
        }
        serde_norway::Value::Number(n) => ports
            .iter()
            .find(|p| p["containerPort"].as_u64() == n.as_u64()),
        other => panic!("a port is a name or a number, not {other:?}"),
    };
    let port = found.unwrap_or_else(|| panic!("no container port {port:?}"));
    u16::try_from(port["containerPort"].as_u64().expect("containerPort")).unwrap()
}

/// Liveness on `/healthz`, readiness on `/readyz`, both on `port` (where
/// the process listens) and both routes of the code's operations router.
fn assert_probes(workload: &serde_norway::Value, port: u16) {
    let ops = repo("api/src/ops.rs");
    let c = container(workload);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert!(
            ops.contains(&format!(".route(\"{path}\"")),
            "api/src/ops.rs serves no {path}"
        );
        assert_eq!(port_number(c, &get["port"]), port, "{probe} port");
    }
}

fn grace_seconds(workload: &serde_norway::Value) -> u64 {
    workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds")
}

#[test]
fn the_k8s_deployments_probe_the_code_s_routes_and_outlast_the_shutdown_grace() {
    let docs = k8s_documents();
    let api = find(&docs, "Deployment", "ferry-api");
    let api_config = config_of(&container_env(&docs, api));
    assert_eq!(container(api)["args"][0].as_str(), Some("api"));
    assert_probes(api, api_config.listen.port());
    assert!(
        api_config.listen.ip().is_unspecified(),
        "the api listens on every interface"
    );
    let service = find(&docs, "Service", "ferry-api");
    for port in service["spec"]["ports"].as_sequence().expect("ports") {
        assert_eq!(
            port_number(container(api), &port["targetPort"]),
            api_config.listen.port()
        );
    }

    let worker = find(&docs, "Deployment", "ferry-worker");
    let worker_env = container_env(&docs, worker);
    let worker_config = config_of(&worker_env);
    assert_eq!(container(worker)["args"][0].as_str(), Some("worker"));
    let admin = worker_config
        .worker_admin_listen
        .expect("the worker's admin port is on (FERRY_WORKER_ADMIN_LISTEN)");
    assert!(admin.ip().is_unspecified());
    assert_probes(worker, admin.port());

    // The worker's grace is set, not left to the default, and Kubernetes
    // waits longer than it before SIGKILL; the api gets as long.
    assert!(
        worker_env
            .iter()
            .any(|(k, _)| k == ferry_common::config::vars::FERRY_SHUTDOWN_GRACE)
    );
    let grace = worker_config.queue.shutdown_grace.as_secs_f64();
    assert!(grace > 0.0);
    for (workload, config) in [(worker, &worker_config), (api, &api_config)] {
        let k8s_grace = grace_seconds(workload) as f64;
        assert!(
            k8s_grace > config.queue.shutdown_grace.as_secs_f64() && k8s_grace > grace,
            "terminationGracePeriodSeconds {k8s_grace} leaves no margin over FERRY_SHUTDOWN_GRACE {grace}"
        );
    }
    // The api places jobs on the partitions the workers read.
    assert_eq!(api_config.queue.partitions, worker_config.queue.partitions);

    let migrate = find(&docs, "Job", "ferry-migrate");
    assert_eq!(container(migrate)["args"][0].as_str(), Some("migrate"));
    let _ = container_env(&docs, migrate);
}

#[test]
fn the_keda_triggers_are_the_configured_partitions_streams() {
    use ferry_common::keys::{CONSUMER_GROUP, Keys};
    let docs = k8s_documents();
    let worker = find(&docs, "Deployment", "ferry-worker");
    let config = config_of(&container_env(&docs, worker));
    let keys = Keys::new(config.prefix.clone()).with_partitions(config.queue.partitions.clone());
    let mut expected: Vec<String> = ferry_common::queue::QUEUES
        .iter()
        .flat_map(|q| keys.partitions().of(q))
        .map(|p| keys.partition(&p).stream())
        .collect();
    expected.sort();
    assert!(
        expected.len() > ferry_common::queue::QUEUES.len(),
        "the manifests show the per-partition shape (a queue with more than one partition)"
    );

    let scaled = find(&docs, "ScaledObject", "ferry-worker");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"].as_str(),
        worker["metadata"]["name"].as_str()
    );
    let min = scaled["spec"]["minReplicaCount"]
        .as_u64()
        .expect("minReplicaCount");
    let max = scaled["spec"]["maxReplicaCount"]
        .as_u64()
        .expect("maxReplicaCount");
    assert!(min >= 1 && max > min, "min {min}, max {max}");
    let auth = find(&docs, "TriggerAuthentication", "ferry-redis");
    let mut streams = Vec::new();
    for trigger in scaled["spec"]["triggers"].as_sequence().expect("triggers") {
        assert_eq!(trigger["type"].as_str(), Some("redis-streams"));
        let meta = &trigger["metadata"];
        let stream = meta["stream"].as_str().expect("stream");
        assert_eq!(
            meta["consumerGroup"].as_str(),
            Some(CONSUMER_GROUP),
            "{stream}"
        );
        let lag: u64 = meta["lagCount"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("{stream}: lagCount, a count"));
        assert!(lag > 0, "{stream}");
        assert!(
            meta["address"].as_str().is_some_and(|a| a.contains(':')),
            "{stream}: host:port"
        );
        assert!(
            meta.get("password").is_none(),
            "{stream}: the password comes from {auth:?}"
        );
        assert_eq!(
            trigger["authenticationRef"]["name"].as_str(),
            auth["metadata"]["name"].as_str()
        );
        streams.push(stream.to_owned());
    }
    streams.sort();
    assert_eq!(
        streams, expected,
        "one trigger per partition of FERRY_QUEUE_PARTITIONS"
    );
}

/// Every string a document holds (comments are not part of it).
fn strings(value: &serde_norway::Value, out: &mut Vec<String>) {
    match value {
        serde_norway::Value::String(s) => out.push(s.clone()),
        serde_norway::Value::Sequence(items) => items.iter().for_each(|v| strings(v, out)),
        serde_norway::Value::Mapping(m) => {
            for (k, v) in m {
                strings(k, out);
                strings(v, out);
            }
        }
        serde_norway::Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

fn looks_secret(var: &str) -> bool {
    [
        "KEY",
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "REDIS_URL",
        "CLUSTER_NODES",
    ]
    .iter()
    .any(|s| var.contains(s))
}

#[test]
fn the_k8s_manifests_name_known_variables_and_hold_no_secret() {
    use ferry_common::config::vars;
    let docs = k8s_documents();
    let mut names = Vec::new();
    for (file, doc) in &docs {
        match doc["kind"].as_str().expect("a kind") {
            "ConfigMap" => {
                for (k, _) in string_map(&doc["data"]) {
                    assert!(!looks_secret(&k), "{file}: {k} belongs in the Secret");
                    names.push((file, k));
                }
            }
            "Secret" => {
                assert!(doc.get("data").is_none(), "{file}: stringData only");
                for (k, v) in string_map(&doc["stringData"]) {
                    assert!(v.is_empty(), "{file}: {k} holds a value");
                    if doc["metadata"]["name"].as_str() == Some("ferry-env") {
                        names.push((file, k));
                    }
                }
            }
            "Deployment" | "Job" => {
                let c = container(doc);
                for var in c["env"]
                    .as_sequence()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let name = var["name"].as_str().expect("a name").to_owned();
                    assert!(!looks_secret(&name), "{file}: {name} belongs in the Secret");
                    names.push((file, name));
                }
            }
            "TriggerAuthentication" => {
                let spec = doc["spec"].as_mapping().expect("spec");
                assert!(
                    spec.keys().all(|k| k.as_str() == Some("secretTargetRef")),
                    "{file}: the Redis password comes from a Secret"
                );
            }
            _ => {}
        }
        let mut all = Vec::new();
        strings(doc, &mut all);
        for s in all {
            assert!(
                !(s.contains("://") && s.contains('@')),
                "{file}: a URL with credentials: keep it in the Secret"
            );
        }
    }
    assert!(names.len() > 10);
    for (file, name) in names {
        assert!(
            vars::is_known(&name),
            "{file}: {name} is not in common/src/config/vars.rs"
        );
    }
}
