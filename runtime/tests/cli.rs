//! The command line: `check-config` and `route explain`, run as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_event-collector"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const ROUTES: &str = r#"
[[exporters]]
name = "warnings"
type = "stdout"
[[exporters]]
name = "all"
type = "stdout"

[[routes]]
name = "warnings"
exporters = ["warnings"]
continue = true
[routes.match]
type = "Warning"
reason = ["glob:Reconcile*", "BackOff"]

[[routes]]
name = "workloads"
exporters = ["all"]
[routes.match]
kind = ["Pod", "Deployment"]

[[routes]]
name = "nodes-dropped"
exporters = []
[routes.match]
kind = "Node"
"#;

#[test]
fn check_config_accepts_the_default_config() {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../event-collector.toml");
    let out = bin().arg("check-config").arg(&default).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK (1 exporters, 1 routes)"), "{stdout}");
}

#[test]
fn check_config_has_no_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("not-created");
    let config = write(
        dir.path(),
        "c.toml",
        &format!(
            "[[exporters]]\nname = \"v\"\ntype = \"volume\"\npath = \"{}\"\n",
            out_dir.display()
        ),
    );
    let out = bin().arg("check-config").arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out_dir.exists(), "check-config must not create the volume directory");

    let bad = write(
        dir.path(),
        "bad.toml",
        "[[exporters]]\nname = \"v\"\ntype = \"volume\"\npath = \"/tmp/x\"\nmax_files = 0\n",
    );
    let out = bin().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:1:1: exporter `v`: `max_files` must be at least 1",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn check_config_rejects_with_positions_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[source]\napi = \"core/v1\"\n\n[[routes]]\nname = \"r\"\nexporters = [\"nope\"]\n[routes.match]\nreason = \"regex:(x\"\n",
    );
    let out = bin().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    assert!(
        err.contains(&format!("{file}:6:14: route `r` sends to exporter `nope`")),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:8:10: invalid regex `(x`")), "{err}");
    assert!(!err.contains("panicked"));

    let missing = dir.path().join("missing.toml");
    let out = bin().arg("check-config").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

fn explain(config: &Path, event: &Path) -> (bool, String, String) {
    let out = bin()
        .args([
            "--config",
            config.to_str().unwrap(),
            "route",
            "explain",
            "--event",
            event.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn route_explain_on_raw_objects_from_either_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", ROUTES);
    // A Warning ReconcileFailed about a Deployment, as core/v1 and as events.k8s.io/v1 serve it.
    for view in [
        "core-series-created_core-view.json",
        "core-series-created_events-v1-view.json",
    ] {
        let (ok, out, err) = explain(&config, &fixture(view));
        assert!(ok, "{err}");
        assert!(out.contains("route \"warnings\": TAKEN"), "{out}");
        assert!(
            out.contains("reason \"ReconcileFailed\" matches glob \"Reconcile*\" of any_of"),
            "{out}"
        );
        assert!(out.contains("route \"workloads\": TAKEN"), "{out}");
        assert!(
            out.contains("kind \"Deployment\" matches \"Deployment\" of any_of"),
            "{out}"
        );
        assert!(
            out.contains("not evaluated: route `workloads` matched and does not continue"),
            "{out}"
        );
        assert!(out.contains("result: sent to warnings, all"), "{out}");
    }
    // A Node event is taken by the drop route.
    let (ok, out, _) = explain(&config, &fixture("events-v1-node_events-v1-view.json"));
    assert!(ok);
    assert!(out.contains("route \"nodes-dropped\": TAKEN"), "{out}");
    assert!(out.contains("exporters: (none: dropped on purpose)"), "{out}");
}

#[test]
fn route_explain_on_the_normalized_form_and_unrouted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", ROUTES);
    let ev = serde_json::json!({
        "schema_version": 1, "cluster": "c", "api": "core/v1", "watch_type": "ADDED",
        "uid": "u", "resource_version": "1", "name": "n", "namespace": "ns",
        "type": "Normal", "reason": "Pulled", "message": null, "note": null, "action": null,
        "object": {"kind": "Service", "namespace": null, "name": null, "uid": null,
                   "api_version": null, "field_path": null, "resource_version": null},
        "related": null, "reporting_controller": null, "reporting_instance": null,
        "count": 1, "count_delta": 1, "first_timestamp": null, "last_timestamp": null,
        "timestamp": "2026-01-01T00:00:00Z", "labels": {}, "annotations": {}
    });
    let event = write(dir.path(), "e.json", &ev.to_string());
    let (ok, out, err) = explain(&config, &event);
    assert!(ok, "{err}");
    assert!(out.contains("type \"Normal\" does not match \"Warning\""), "{out}");
    assert!(
        out.contains("kind \"Service\" matches none of any_of [\"Pod\", \"Deployment\"]"),
        "{out}"
    );
    assert!(out.contains("result: unrouted"), "{out}");
}

#[test]
fn route_explain_rejects_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.toml", ROUTES);
    let not_json = write(dir.path(), "x.json", "{ nope");
    let (ok, _, err) = explain(&config, &not_json);
    assert!(!ok);
    assert!(err.contains("x.json: not JSON"), "{err}");
    let wrong = write(
        dir.path(),
        "p.json",
        r#"{"apiVersion": "apps/v1", "kind": "Deployment"}"#,
    );
    let (ok, _, err) = explain(&config, &wrong);
    assert!(!ok);
    assert!(err.contains("apiVersion `apps/v1` is neither"), "{err}");
    let no_uid = write(
        dir.path(),
        "n.json",
        r#"{"apiVersion": "v1", "kind": "Event", "metadata": {"name": "a", "namespace": "b"}}"#,
    );
    let (ok, _, err) = explain(&config, &no_uid);
    assert!(!ok);
    assert!(
        err.contains("event b/a (uid unknown) from core/v1 has no metadata.uid"),
        "{err}"
    );
}
