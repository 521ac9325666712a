//! End-to-end checks of `manifest/`: every kustomize overlay and the Helm
//! chart applied to a real kube-apiserver (server-side dry run, CRD-based
//! objects validated against the real prometheus-operator CRDs), the chart
//! compared object by object with the kustomize output, every PromQL
//! expression checked and unit-tested by promtool, and the collector run with
//! exactly the RBAC of `manifest/base` as its ServiceAccount.
//!
//! Needs kubectl, `dev_setup/install-helm.sh` and `dev_setup/install-promtool.sh`
//! (dev_setup/test.sh runs both).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use event_collector_e2e::{Cluster, Collector, events, repo_root, wait_for_events};
use serde_json::{Value, json};

/// The overlays (and base) of `manifest/`, each with the Helm values that must render the same objects.
const VARIANTS: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("overlays/ha", &["--set", "ha.enabled=true"]),
    ("overlays/persistent", &["--set", "persistence.enabled=true"]),
    (
        "overlays/monitoring",
        &[
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--set",
            "monitoring.dashboard.enabled=true",
        ],
    ),
];

/// Every metric the collector exports (the shared metric contract), without the `event_collector_` prefix.
const METRICS: &[&str] = &[
    "events_received_total",
    "source_skipped_total",
    "watch_errors_total",
    "watch_relists_total",
    "events_normalize_failed_total",
    "events_startup_dropped_total",
    "events_unrouted_total",
    "route_matched_total",
    "exporter_events_total",
    "exporter_batches_total",
    "exporter_failures_total",
    "exporter_dropped_total",
    "exporter_queue_depth",
    "exporter_queue_bytes",
    "exporter_queue_capacity_events",
    "exporter_spill_bytes",
    "checkpoint_pending",
    "checkpoint_age_seconds",
    "checkpoint_writes_total",
    "filter_calls_total",
    "filter_call_seconds",
    "filter_event_requests_total",
    "filter_failures_total",
    "filter_breaker_state",
    "filter_swaps_total",
    "filter_instantiations_total",
    "filter_cache_total",
    "lag_seconds",
    "gap_records_total",
    "config_reloads_total",
    "ready",
    "leader",
    "kubernetes_events_total",
];

const NAMESPACE: &str = "event-collector";

fn manifest_dir() -> PathBuf {
    repo_root().join("manifest")
}

fn chart_dir() -> PathBuf {
    manifest_dir().join("helm/event-collector")
}

/// Runs a program; returns its stdout, or panics with its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = try_run(program, args, stdin);
    assert!(ok, "{program} {} failed:\n{err}\n{out}", args.join(" "));
    out
}

/// Runs a program; returns (success, stdout, stderr).
fn try_run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Helm binary installed by dev_setup/install-helm.sh.
fn helm() -> String {
    let cache = std::env::var("EVENT_COLLECTOR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/event-collector"));
    let bin = cache.join("bin/helm");
    assert!(
        bin.is_file(),
        "{} is missing: run dev_setup/install-helm.sh",
        bin.display()
    );
    bin.display().to_string()
}

fn kustomize(variant: &str) -> String {
    run(
        "kubectl",
        &["kustomize", &manifest_dir().join(variant).display().to_string()],
        None,
    )
}

fn helm_template(values: &[&str]) -> String {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", "event-collector", &chart, "--namespace", NAMESPACE];
    args.extend_from_slice(values);
    run(&helm(), &args, None)
}

/// `kubectl apply --dry-run=server -o json`: the objects as the apiserver would store them.
fn dry_run(cluster: &Cluster, yaml: &str) -> Vec<Value> {
    let kc = cluster.admin_kubeconfig();
    let out = run(
        "kubectl",
        &["--kubeconfig", kc, "apply", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(yaml),
    );
    let v: Value = serde_json::from_str(&out).expect("kubectl -o json output");
    match v["kind"].as_str() {
        Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![v],
    }
}

/// Installs the vendored prometheus-operator CRDs and the collector namespace.
fn prepare(cluster: &Cluster) {
    let kc = cluster.admin_kubeconfig();
    let crds = repo_root()
        .join("tests/fixtures/prometheus-operator")
        .display()
        .to_string();
    run("kubectl", &["--kubeconfig", kc, "apply", "-f", &crds], None);
    let wait = [
        "--kubeconfig",
        kc,
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ];
    // Right after the apply a CRD may have no `status.conditions` yet, and
    // this kubectl then fails at once ("accessor error") instead of waiting.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, err) = try_run("kubectl", &wait, None);
        if ok {
            break;
        }
        assert!(
            err.contains("accessor error") && std::time::Instant::now() < deadline,
            "kubectl {} failed:\n{err}\n{out}",
            wait.join(" ")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    cluster.create_namespace(NAMESPACE).expect("namespace");
}

fn find<'a>(objects: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().unwrap_or("").starts_with(name_prefix))
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}* among the objects"))
}

#[test]
fn every_overlay_and_the_chart_apply_on_the_apiserver() {
    let cluster = Cluster::start().expect("cluster");
    prepare(&cluster);
    for (variant, values) in VARIANTS {
        for (what, yaml) in [
            (format!("kustomize {variant}"), kustomize(variant)),
            (format!("helm {values:?}"), helm_template(values)),
        ] {
            let objects = dry_run(&cluster, &yaml);
            let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
            for kind in [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "ConfigMap",
                "Service",
                "Deployment",
            ] {
                assert!(kinds.contains(kind), "{what}: no {kind} in {kinds:?}");
            }
            let deploy = find(&objects, "Deployment", "event-collector");
            let pod = &deploy["spec"]["template"]["spec"];
            let c = &pod["containers"][0];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{what}"
            );
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]), "{what}");
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
            assert_eq!(
                c["ports"][0],
                json!({"name": "http-metrics", "containerPort": 9464, "protocol": "TCP"}),
                "{what}"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string() && c["resources"]["requests"]["cpu"].is_string(),
                "{what}"
            );
            let data = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "data")
                .expect("data volume");
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == "data")
                .expect("data mount");
            assert_eq!(mount["mountPath"], "/var/lib/event-collector", "{what}");
            if variant.ends_with("persistent") {
                assert_eq!(
                    data["persistentVolumeClaim"]["claimName"], "event-collector-data",
                    "{what}"
                );
                find(&objects, "PersistentVolumeClaim", "event-collector-data");
            } else {
                assert!(data["emptyDir"].is_object(), "{what}: {data}");
            }
            let service = find(&objects, "Service", "event-collector");
            assert_eq!(service["spec"]["ports"][0]["name"], "http-metrics", "{what}");
            assert_eq!(service["spec"]["ports"][0]["port"], 9464, "{what}");
            if variant.ends_with("ha") {
                assert_eq!(deploy["spec"]["replicas"], 2, "{what}");
            }
            if variant.ends_with("monitoring") {
                // Stored as sent: the CRD schema pruned nothing.
                let sm = find(&objects, "ServiceMonitor", "event-collector");
                assert_eq!(sm["spec"]["endpoints"][0]["port"], "http-metrics", "{what}");
                assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics", "{what}");
                let rule = find(&objects, "PrometheusRule", "event-collector");
                let alerts = rule["spec"]["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|g| g["rules"].as_array().unwrap().clone())
                    .count();
                assert!(alerts >= 10, "{what}: {alerts} alerts");
                let dash = find(&objects, "ConfigMap", "event-collector-dashboard");
                assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1", "{what}");
            }
        }
    }

    // Leaving out the cluster-id ClusterRole (a component) still applies.
    let dir = tempfile::tempdir().unwrap();
    let rel = |p: &str| pathdiff(&manifest_dir().join(p), dir.path());
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\ncomponents: [{}]\n",
            rel("base"),
            rel("components/without-cluster-id")
        ),
    )
    .unwrap();
    let objects = dry_run(
        &cluster,
        &run("kubectl", &["kustomize", &dir.path().display().to_string()], None),
    );
    assert!(
        objects
            .iter()
            .all(|o| !o["metadata"]["name"].as_str().unwrap_or("").ends_with("cluster-id"))
    );
    assert!(objects.iter().any(|o| o["kind"] == "Deployment"));
    let objects = dry_run(&cluster, &helm_template(&["--set", "rbac.clusterId=false"]));
    assert!(
        objects
            .iter()
            .all(|o| !o["metadata"]["name"].as_str().unwrap_or("").ends_with("cluster-id"))
    );

    // The CRDs really validate: a ServiceMonitor with a bad enum value or an unknown field is refused.
    let kc = cluster.admin_kubeconfig();
    let bad_enum = "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: bad, namespace: event-collector}\nspec:\n  selector: {}\n  endpoints: [{port: x, scheme: ftp}]\n";
    let (ok, _, err) = try_run(
        "kubectl",
        &["--kubeconfig", kc, "apply", "--dry-run=server", "-f", "-"],
        Some(bad_enum),
    );
    assert!(!ok && err.contains("scheme"), "a bad scheme must be refused: {err}");
    let unknown = bad_enum.replace("scheme: ftp", "intervall: 5s");
    let (ok, _, err) = try_run(
        "kubectl",
        &["--kubeconfig", kc, "apply", "--dry-run=server", "-f", "-"],
        Some(&unknown),
    );
    assert!(
        !ok && err.contains("intervall"),
        "an unknown field must be refused: {err}"
    );
}

/// `to`, relative to `from` (both absolute directories), for a kustomization.
fn pathdiff(to: &Path, from: &Path) -> String {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = from[common..].iter().map(|_| "..".to_string()).collect();
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// An object reduced to what the chart and the kustomize base must agree on:
/// names (without kustomize's hash suffix), labels other than Helm's own,
/// specs and data as the apiserver would store them, config.toml parsed.
fn normalize(mut o: Value) -> (String, Value) {
    let kind = o["kind"].as_str().unwrap_or("").to_string();
    let name = strip_hash(o["metadata"]["name"].as_str().unwrap_or(""));
    let mut labels = o["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    for helm_only in [
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    ] {
        labels.remove(helm_only);
    }
    o["metadata"] = json!({"name": name, "namespace": o["metadata"]["namespace"], "labels": labels});
    if let Some(obj) = o.as_object_mut() {
        obj.remove("status");
    }
    if kind == "Deployment" {
        let tmpl = &mut o["spec"]["template"];
        if let Some(meta) = tmpl.get_mut("metadata").and_then(Value::as_object_mut)
            && let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut)
        {
            ann.remove("checksum/config");
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
        // Volume order carries no meaning (a kustomize patch moves the one it replaces first).
        if let Some(volumes) = tmpl["spec"]["volumes"].as_array_mut() {
            volumes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
        for v in tmpl["spec"]["volumes"].as_array_mut().into_iter().flatten() {
            if let Some(n) = v.pointer("/configMap/name").and_then(Value::as_str).map(strip_hash) {
                v["configMap"]["name"] = json!(n);
            }
        }
    }
    if kind == "ConfigMap"
        && let Some(data) = o.get_mut("data").and_then(Value::as_object_mut)
    {
        for (key, value) in data.iter_mut() {
            let text = value.as_str().unwrap_or("").to_string();
            if key.ends_with(".toml") {
                let parsed: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}/{key}: {e}\n{text}"));
                *value = serde_json::to_value(parsed).unwrap();
            } else if key.ends_with(".json") {
                *value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}/{key}: {e}"));
            }
        }
    }
    (format!("{kind}/{name}"), o)
}

/// kustomize's generated ConfigMap names end in `-<10 character hash>`.
fn strip_hash(name: &str) -> String {
    match name.strip_prefix("event-collector-config-") {
        Some(hash) if hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()) => {
            "event-collector-config".into()
        }
        _ => name.to_string(),
    }
}

#[test]
fn the_chart_renders_the_same_objects_as_kustomize() {
    let cluster = Cluster::start().expect("cluster");
    prepare(&cluster);
    let (ok, out, err) = try_run(&helm(), &["lint", "--strict", &chart_dir().display().to_string()], None);
    assert!(ok, "helm lint --strict: {out}{err}");
    for (variant, values) in VARIANTS {
        let kustomized: BTreeMap<String, Value> = dry_run(&cluster, &kustomize(variant))
            .into_iter()
            .filter(|o| o["kind"] != "Namespace")
            .map(normalize)
            .collect();
        let helmed: BTreeMap<String, Value> = dry_run(&cluster, &helm_template(values))
            .into_iter()
            .map(normalize)
            .collect();
        assert_eq!(
            kustomized.keys().collect::<Vec<_>>(),
            helmed.keys().collect::<Vec<_>>(),
            "{variant}: the chart with {values:?} renders other objects"
        );
        for (key, k) in &kustomized {
            let h = &helmed[key];
            assert!(
                k == h,
                "{variant} vs chart {values:?}: {key} differs\nkustomize: {}\nhelm:      {}",
                serde_json::to_string_pretty(k).unwrap(),
                serde_json::to_string_pretty(h).unwrap()
            );
        }
    }

    // Values reach config.toml with their TOML types (whole numbers stay integers),
    // filter modules reach the filters ConfigMap, a raw config replaces the rendered one.
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        "config:\n  cluster: prod-eu\n  source: {api: core/v1, page_size: 250, namespaces: [a, b]}\n  \
         exporters:\n    - {name: k, type: kafka, brokers: [\"b:9092\"], topic: t, properties: {\"queue.buffering.max.kbytes\": 65536}}\n  \
         routes:\n    - {name: w, exporters: [k], match: {type: Warning, reason: [\"glob:Failed*\"]}}\n",
    )
    .unwrap();
    let wasm = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wasm.path(), b"\0asm\x01\0\0\0").unwrap();
    let objects = dry_run(
        &cluster,
        &helm_template(&[
            "-f",
            &values.path().display().to_string(),
            "--set-file",
            &format!("filters.modules.redact\\.wasm={}", wasm.path().display()),
        ]),
    );
    let (_, cm) = normalize(find(&objects, "ConfigMap", "event-collector-config").clone());
    let config = &cm["data"]["config.toml"];
    assert_eq!(config["cluster"], "prod-eu");
    assert_eq!(config["source"]["page_size"], 250);
    assert_eq!(config["source"]["namespaces"], json!(["a", "b"]));
    assert_eq!(
        config["exporters"][0]["properties"]["queue.buffering.max.kbytes"],
        65536
    );
    assert_eq!(config["routes"][0]["match"]["reason"], json!(["glob:Failed*"]));
    let filters = find(&objects, "ConfigMap", "event-collector-filters");
    assert_eq!(filters["binaryData"]["redact.wasm"], "AGFzbQEAAAA=");
    let raw = "cluster = \"raw\"\n[[exporters]]\nname = \"o\"\ntype = \"stdout\"\n[[routes]]\nname = \"r\"\ndefault = true\nexporters = [\"o\"]\n";
    let raw_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(raw_file.path(), raw).unwrap();
    let objects = dry_run(
        &cluster,
        &helm_template(&["--set-file", &format!("configToml={}", raw_file.path().display())]),
    );
    let cm = find(&objects, "ConfigMap", "event-collector-config");
    assert_eq!(cm["data"]["config.toml"].as_str().unwrap().trim(), raw.trim());
}

/// The PrometheusRule and the dashboard of overlays/monitoring, as the apiserver stores them.
fn monitoring_objects(cluster: &Cluster) -> (Value, Value) {
    let objects = dry_run(cluster, &kustomize("overlays/monitoring"));
    let rule = find(&objects, "PrometheusRule", "event-collector").clone();
    let dash = find(&objects, "ConfigMap", "event-collector-dashboard");
    let text = dash["data"]["event-collector-dashboard.json"]
        .as_str()
        .expect("dashboard json");
    (rule, serde_json::from_str(text).expect("dashboard is JSON"))
}

/// Every `event_collector_*` metric name in a PromQL expression (histogram suffixes removed).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("event_collector_") {
        let tail = &rest[at + "event_collector_".len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

fn promtool(args: &[&str]) -> (bool, String) {
    let (ok, out, err) = try_run("promtool", args, None);
    (ok, format!("{out}{err}"))
}

#[test]
fn alerts_and_dashboard_are_valid_promql_on_the_metric_contract() {
    let cluster = Cluster::start().expect("cluster");
    prepare(&cluster);
    let (rule, dashboard) = monitoring_objects(&cluster);
    let dir = tempfile::tempdir().unwrap();

    // The alerting rules: promtool parses every expression and template.
    let rules_file = dir.path().join("rules.json");
    std::fs::write(&rules_file, serde_json::to_string(&rule["spec"]).unwrap()).unwrap();
    let (ok, out) = promtool(&["check", "rules", &rules_file.display().to_string()]);
    assert!(ok, "promtool check rules: {out}");
    let mut alert_names = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            for m in metric_names(expr) {
                assert!(
                    METRICS.contains(&m.as_str()),
                    "alert {}: event_collector_{m} is not a collector metric",
                    r["alert"]
                );
            }
            alert_names.insert(r["alert"].as_str().unwrap().to_string());
        }
    }
    for required in [
        "EventCollectorDown",
        "EventCollectorNotReady",
        "EventCollectorExportFailing",
        "EventCollectorQueueNearFull",
        "EventCollectorFilterBreakerOpen",
        "EventCollectorGapRecords",
        "KubernetesWarningEventsSpike",
        "KubernetesWarningReasonSpike",
    ] {
        assert!(alert_names.contains(required), "no alert {required}: {alert_names:?}");
    }

    // The alerts fire on the series they are meant for, and only then.
    std::fs::copy(
        repo_root().join("tests/fixtures/monitoring/alerts-test.yaml"),
        dir.path().join("alerts-test.yaml"),
    )
    .unwrap();
    let (ok, out) = promtool(&[
        "test",
        "rules",
        &dir.path().join("alerts-test.yaml").display().to_string(),
    ]);
    assert!(ok, "promtool test rules: {out}");

    // The dashboard: each panel query becomes a recording rule, with Grafana's variables filled in.
    let mut records = Vec::new();
    let mut used = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        titles.push(panel["title"].as_str().unwrap_or("").to_lowercase());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            used.extend(metric_names(expr));
            let concrete = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$pod", ".*");
            records.push(json!({"record": format!("dashboard:panel:{}", records.len()), "expr": concrete}));
        }
    }
    assert!(records.len() >= 20, "{} panel queries", records.len());
    for m in &used {
        assert!(
            METRICS.contains(&m.as_str()),
            "dashboard: event_collector_{m} is not a collector metric"
        );
    }
    let dash_rules = dir.path().join("dashboard.json");
    std::fs::write(
        &dash_rules,
        json!({"groups": [{"name": "dashboard", "rules": records}]}).to_string(),
    )
    .unwrap();
    let (ok, out) = promtool(&["check", "rules", &dash_rules.display().to_string()]);
    assert!(ok, "promtool check rules (dashboard queries): {out}");
    for (subject, metric) in [
        ("throughput", "events_received_total"),
        ("success", "exporter_events_total"),
        ("failure", "exporter_failures_total"),
        ("lag", "lag_seconds"),
        ("queue", "exporter_queue_depth"),
        ("filter call latency", "filter_call_seconds"),
        ("traps", "filter_failures_total"),
        ("by reason", "kubernetes_events_total"),
    ] {
        assert!(
            titles.iter().any(|t| t.contains(subject)),
            "no dashboard panel about {subject}: {titles:?}"
        );
        assert!(
            used.contains(metric),
            "the dashboard does not query event_collector_{metric}"
        );
    }
}

/// A kubeconfig like the collector's, authenticating with `token` instead.
fn kubeconfig_with_token(cluster: &Cluster, token: &str, path: &Path) {
    let text = std::fs::read_to_string(cluster.collector_kubeconfig()).expect("collector kubeconfig");
    let replaced: Vec<String> = text
        .lines()
        .map(|l| match l.find("token: ") {
            Some(at) => format!("{}token: {token}", &l[..at]),
            None => l.to_string(),
        })
        .collect();
    std::fs::write(path, replaced.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_collector_works_with_exactly_the_manifest_rbac() {
    let cluster = Cluster::start().expect("cluster");
    let admin = cluster.admin_kubeconfig();
    // Drop the dev_setup grants of the static collector user, then apply manifest/base for real.
    for obj in ["clusterrolebinding/event-collector", "clusterrole/event-collector"] {
        run("kubectl", &["--kubeconfig", admin, "delete", obj], None);
    }
    run(
        "kubectl",
        &[
            "--kubeconfig",
            admin,
            "apply",
            "-k",
            &manifest_dir().join("base").display().to_string(),
        ],
        None,
    );
    let token = run(
        "kubectl",
        &[
            "--kubeconfig",
            admin,
            "-n",
            NAMESPACE,
            "create",
            "token",
            "event-collector",
            "--duration=1h",
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let kc_path = dir.path().join("sa.kubeconfig");
    kubeconfig_with_token(&cluster, token.trim(), &kc_path);
    let kc = kc_path.display().to_string();

    // Exactly these grants, nothing more.
    let listed = run(
        "kubectl",
        &["--kubeconfig", &kc, "auth", "can-i", "--list", "-n", NAMESPACE],
        None,
    );
    let mut grants = BTreeSet::new();
    for line in listed.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Resource rows start with the resource; non-resource URL rows start with "[".
        // Columns: resource, non-resource URLs, resource names, verbs (the verbs hold spaces).
        if cols.len() >= 4 && !cols[0].starts_with('[') && !cols[0].starts_with("selfsubject") {
            grants.insert(format!("{} {} {}", cols[0], cols[2], cols[3..].join(" ")));
        }
    }
    let expected: BTreeSet<String> = [
        "events [] [get list watch]",
        "events.events.k8s.io [] [get list watch]",
        "namespaces [kube-system] [get]",
        "leases.coordination.k8s.io [event-collector] [get update]",
        "leases.coordination.k8s.io [] [create]",
        "configmaps [event-collector-checkpoint] [get update]",
        "configmaps [] [create]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        grants, expected,
        "as the ServiceAccount, `kubectl auth can-i --list`:\n{listed}"
    );
    let can = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kc.as_str(), "auth", "can-i"];
        all.extend_from_slice(args);
        let (_, out, _) = try_run("kubectl", &all, None);
        out.trim().to_string()
    };
    assert_eq!(can(&["watch", "events.events.k8s.io", "-A"]), "yes");
    assert_eq!(can(&["update", "leases/event-collector", "-n", NAMESPACE]), "yes");
    for denied in [
        &["create", "events", "-A"][..],
        &["delete", "events.events.k8s.io", "-A"],
        &["list", "secrets", "-A"],
        &["get", "secrets", "-n", NAMESPACE],
        &["list", "pods", "-A"],
        &["list", "namespaces"],
        &["get", "namespaces/default"],
        &["get", "configmaps/event-collector-checkpoint", "-n", "default"],
        &["create", "configmaps", "-n", "default"],
        &["get", "configmaps/other", "-n", NAMESPACE],
        &["list", "configmaps", "-n", NAMESPACE],
        &["delete", "configmaps/event-collector-checkpoint", "-n", NAMESPACE],
        &["get", "leases/other", "-n", NAMESPACE],
        &["delete", "leases/event-collector", "-n", NAMESPACE],
        &["create", "leases", "-n", "kube-system"],
        &["list", "nodes"],
    ] {
        assert_eq!(can(denied), "no", "{denied:?} must be denied to the collector");
    }
    // The static dev_setup user lost its grants: the collector below runs on the manifest RBAC only.
    let (_, out, _) = try_run(
        "kubectl",
        &[
            "--kubeconfig",
            cluster.collector_kubeconfig(),
            "auth",
            "can-i",
            "list",
            "events",
            "-A",
        ],
        None,
    );
    assert_eq!(out.trim(), "no");

    // Run the collector as the ServiceAccount; no `cluster` in the config, so it names the
    // cluster by the kube-system uid it may read.
    let out_dir = dir.path().join("out");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[[exporters]]\nname = \"local\"\ntype = \"volume\"\npath = \"{}\"\nfsync = \"always\"\nbatch_timeout = \"20ms\"\n\n\
             [[routes]]\nname = \"all\"\ndefault = true\nexporters = [\"local\"]\n",
            out_dir.display()
        ),
    )
    .unwrap();
    let collector = Collector::start(&config, &kc, &[]).expect("collector");
    cluster.create_namespace("rbac-e2e").unwrap();
    let client = cluster.admin_client().await.unwrap();
    let mut uids = Vec::new();
    for i in 0..3 {
        let ev = events::v1(
            "rbac-e2e",
            &format!("v1-{i}"),
            "Warning",
            "FailedMount",
            "Pod",
            "web",
            "mount failed",
        );
        uids.push(events::create_v1(&client, &ev).await.unwrap().metadata.uid.unwrap());
        let ev = events::core(
            "rbac-e2e",
            &format!("core-{i}"),
            "Normal",
            "Pulled",
            "Pod",
            "web",
            "pulled",
        );
        uids.push(events::create_core(&client, &ev).await.unwrap().metadata.uid.unwrap());
    }
    let got = wait_for_events(&out_dir, uids.len(), Duration::from_secs(60));
    let log = collector.log_text();
    let kube_system_uid = run(
        "kubectl",
        &[
            "--kubeconfig",
            admin,
            "get",
            "namespace",
            "kube-system",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    );
    for uid in &uids {
        let e = got
            .iter()
            .find(|e| e["uid"] == uid.as_str())
            .unwrap_or_else(|| panic!("event {uid} not exported; got {} events\nlog:\n{log}", got.len()));
        assert_eq!(
            e["cluster"],
            kube_system_uid.trim(),
            "cluster name from the kube-system uid"
        );
    }
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "the collector hit a denied request:\n{log}"
    );
}

#[test]

fn the_in_cluster_configs_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let rendered = helm_template(&["--set", "ha.enabled=true"]);
    let mut files = vec![
        manifest_dir().join("base/config.toml"),
        manifest_dir().join("overlays/ha/config.toml"),
    ];
    // The chart's config.toml (a block scalar under `config.toml: |`), with and without HA.
    for (i, yaml) in [helm_template(&[]), rendered].iter().enumerate() {
        let start = yaml.find("config.toml: |").expect("config.toml in the chart output");
        let body: Vec<&str> = yaml[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect();
        let path = dir.path().join(format!("chart-{i}.toml"));
        std::fs::write(&path, body.join("\n")).unwrap();
        files.push(path);
    }
    for file in files {
        let (ok, out, err) = try_run(
            &event_collector_e2e::collector_bin().display().to_string(),
            &["check-config", &file.display().to_string()],
            None,
        );
        assert!(ok, "check-config {}: {out}{err}", file.display());
    }
}
