//! Reload: the diff of two configs, validation before anything changes, and
//! what a rejected or an applied reload leaves behind.

use std::path::Path;

use super::*;

const BASE: &str = r#"
[[exporters]]
name = "a"
type = "stdout"

[[exporters]]
name = "b"
type = "stdout"
dead_letter = "c"

[[exporters]]
name = "c"
type = "stdout"

[[exporters]]
name = "d"
type = "stdout"

[[routes]]
name = "warnings"
exporters = ["a", "b"]
[routes.match]
type = "Warning"

[[routes]]
name = "rest"
exporters = ["d"]
default = true
"#;

fn parse(src: &str) -> Config {
    Config::parse(src, Path::new("/etc/ec/reload.toml")).unwrap()
}

#[test]
fn fingerprints_ignore_source_positions_only() {
    assert_eq!(
        fingerprint(&"Spanned { span: 12..345, value: \"x\" }"),
        fingerprint(&"Spanned { span: 1..2, value: \"x\" }")
    );
    assert_ne!(
        fingerprint(&"Spanned { span: 1..2, value: \"x\" }"),
        fingerprint(&"Spanned { span: 1..2, value: \"y\" }")
    );
    assert_eq!(fingerprint(&"span: oops"), format!("{:?}", "span: oops"));
}

#[test]
fn exporters_are_kept_restarted_added_and_removed() {
    let old = parse(BASE);
    // `a` moves down (same settings), `c` changes (so `b`, whose dead letters
    // go to `c`, restarts too), `d` goes, `e` comes.
    let new = parse(
        r#"
[[exporters]]
name = "e"
type = "stdout"

[[exporters]]
name = "b"
type = "stdout"
dead_letter = "c"

[[exporters]]
name = "c"
type = "stdout"
batch_max_events = 7

[[exporters]]
name = "a"
type = "stdout"

[[routes]]
name = "warnings"
exporters = ["a", "b", "e"]
[routes.match]
type = "Warning"
"#,
    );
    let d = diff_exporters(&old, &new);
    assert_eq!(d.kept, vec!["a"]);
    assert_eq!(d.restarted, vec!["b", "c"]);
    assert_eq!(d.added, vec!["e"]);
    assert_eq!(d.removed, vec!["d"]);

    let r = diff_routes(&old, &new);
    assert_eq!(r.changed, vec!["warnings"]);
    assert_eq!(r.removed, vec!["rest"]);
    assert!(r.added.is_empty());
}

#[test]
fn an_identical_config_with_moved_lines_changes_nothing() {
    let old = parse(BASE);
    let new = parse(&format!("\n\n# a comment\n{BASE}"));
    let d = diff_exporters(&old, &new);
    assert_eq!(d.kept, vec!["a", "b", "c", "d"]);
    assert!(d.restarted.is_empty() && d.added.is_empty() && d.removed.is_empty());
    assert_eq!(diff_routes(&old, &new), RouteDiff::default());
    assert!(!filters_changed(&old, &new));
    assert!(restart_sections(&old, &new).is_empty());
}

#[test]
fn sections_that_need_a_restart_are_named_and_include_raw_is_live() {
    let old = parse(BASE);
    let new = parse(&format!(
        "cluster = \"other\"\n[http]\naddress = \"127.0.0.1:1\"\n[log]\nlevel = \"debug\"\n[source]\ninclude_raw = true\n{BASE}"
    ));
    assert_eq!(restart_sections(&old, &new), vec!["cluster", "[http]", "[log]"]);
    let live = live_part(&old, new);
    assert!(live.source.include_raw);
    assert_eq!(live.cluster, old.cluster);
    assert_eq!(live.http.address(), old.http.address());
}

fn reloader(dir: &Path, src: &str) -> (Reloader, mpsc::Receiver<Reconfigure>, Arc<Metrics>) {
    let path = dir.join("reload.toml");
    std::fs::write(&path, src).unwrap();
    let config = Config::load(&path).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(1);
    let r = Reloader::new(path, config, src.to_string(), None, "c1", metrics.clone(), tx);
    (r, rx, metrics)
}

fn counter(metrics: &Metrics, result: &str) -> u64 {
    let line = format!("event_collector_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_rejected_config_names_file_line_col_and_leaves_the_running_one() {
    let tmp = tempfile::TempDir::new().unwrap();
    let (mut r, mut rx, metrics) = reloader(tmp.path(), BASE);
    let path = tmp.path().join("reload.toml");

    // A route naming an exporter that does not exist: line 4, column 14.
    let bad = "[[routes]]\nname = \"x\"\n\nexporters = [\"nope\"]\n";
    std::fs::write(&path, bad).unwrap();
    let err = r.reload(Trigger::File).await.unwrap().unwrap_err();
    assert!(
        err.contains(&format!("{}:4:14: ", path.display())),
        "error does not name file:line:col: {err}"
    );
    assert!(err.contains("`nope`"), "{err}");
    assert_eq!(counter(&metrics, "rejected"), 1);
    assert_eq!(counter(&metrics, "applied"), 0);
    assert_eq!(r.running().exporters.len(), 4);
    assert!(rx.try_recv().is_err(), "nothing may reach the pipeline");

    // The same text again (another event for the same write) is not re-read as a new attempt.
    assert!(r.reload(Trigger::File).await.is_none());
    assert_eq!(counter(&metrics, "rejected"), 1);

    // A TOML syntax error: its place too.
    std::fs::write(&path, format!("{BASE}\n[[exporters]\n")).unwrap();
    let err = r.reload(Trigger::File).await.unwrap().unwrap_err();
    let line = BASE.lines().count() + 2;
    assert!(err.contains(&format!("{}:{line}:", path.display())), "{err}");
    assert_eq!(counter(&metrics, "rejected"), 2);

    // An exporter whose own settings are invalid (checked by the exporter): at its table.
    std::fs::write(
        &path,
        format!("{BASE}\n[[exporters]]\nname = \"v\"\ntype = \"volume\"\npath = \"\"\n"),
    )
    .unwrap();
    let err = r.reload(Trigger::File).await.unwrap().unwrap_err();
    assert!(err.contains(&format!("{}:{}:", path.display(), line)), "{err}");
    assert!(err.contains("`path` must not be empty"), "{err}");
    assert_eq!(counter(&metrics, "rejected"), 3);

    // A missing filter module: named with its file.
    std::fs::write(
        &path,
        format!("{BASE}\n[[filters]]\nname = \"f\"\nmodule = \"missing.wasm\"\n"),
    )
    .unwrap();
    let err = r.reload(Trigger::File).await.unwrap().unwrap_err();
    assert!(err.contains("missing.wasm"), "{err}");
    assert!(err.contains(&format!("{}:{}:", path.display(), line + 2)), "{err}");
    assert_eq!(counter(&metrics, "rejected"), 4);

    // A module that is not WASM, run by a route: the filter host refuses it, naming filter and file.
    std::fs::write(tmp.path().join("bad.wasm"), b"not wasm at all").unwrap();
    std::fs::write(
        &path,
        format!(
            r#"{BASE}
[[filters]]
name = "f"
module = "bad.wasm"

[[routes]]
name = "filtered"
filters = ["f"]
exporters = ["a"]
"#
        ),
    )
    .unwrap();
    let err = r.reload(Trigger::File).await.unwrap().unwrap_err();
    assert!(err.contains("filter `f`") && err.contains("bad.wasm"), "{err}");
    assert_eq!(counter(&metrics, "rejected"), 5);
    assert_eq!(r.running().exporters.len(), 4);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn an_applied_config_keeps_unchanged_exporters_and_builds_only_the_others() {
    let tmp = tempfile::TempDir::new().unwrap();
    let (mut r, mut rx, metrics) = reloader(tmp.path(), BASE);
    let path = tmp.path().join("reload.toml");
    let new = BASE.replace(
        "name = \"d\"\ntype = \"stdout\"",
        "name = \"d\"\ntype = \"stdout\"\nbatch_max_events = 5",
    ) + "\n[[exporters]]\nname = \"e\"\ntype = \"stdout\"\n";
    std::fs::write(&path, &new).unwrap();
    // Play the pipeline: look at the plan and accept it.
    let pipeline = tokio::spawn(async move {
        let mut rc = rx.recv().await.unwrap();
        let plan: Vec<(String, bool)> = rc
            .exporters
            .iter()
            .map(|p| (p.name().to_string(), matches!(p, ExporterPlan::Keep(_))))
            .collect();
        assert_eq!(rc.routes.routes().len(), 2);
        assert_eq!(rc.chains.exporters, vec![vec![0, 1], vec![3]]);
        rc.applied.take().unwrap().send(Ok(())).unwrap();
        plan
    });
    assert_eq!(r.reload(Trigger::File).await, Some(Ok(())));
    let plan = pipeline.await.unwrap();
    assert_eq!(
        plan,
        vec![
            ("a".to_string(), true),
            ("b".to_string(), true),
            ("c".to_string(), true),
            ("d".to_string(), false),
            ("e".to_string(), false),
        ]
    );
    assert_eq!(counter(&metrics, "applied"), 1);
    assert_eq!(r.running().exporters.len(), 5);
}

#[tokio::test]
async fn sighup_reloads_an_unchanged_file_and_a_refusing_pipeline_rejects() {
    let tmp = tempfile::TempDir::new().unwrap();
    let (mut r, mut rx, metrics) = reloader(tmp.path(), BASE);
    assert!(r.reload(Trigger::File).await.is_none(), "unchanged file: nothing to do");
    let pipeline = tokio::spawn(async move {
        let mut rc = rx.recv().await.unwrap();
        assert!(rc.exporters.iter().all(|p| matches!(p, ExporterPlan::Keep(_))));
        rc.applied.take().unwrap().send(Ok(())).unwrap();
        let mut rc = rx.recv().await.unwrap();
        rc.applied.take().unwrap().send(Err("refused".into())).unwrap();
    });
    assert_eq!(r.reload(Trigger::Signal).await, Some(Ok(())));
    assert_eq!(counter(&metrics, "applied"), 1);
    assert_eq!(r.reload(Trigger::Signal).await, Some(Err("refused".to_string())));
    assert_eq!(counter(&metrics, "rejected"), 1);
    pipeline.await.unwrap();
}

#[tokio::test]
async fn the_watcher_sees_a_rename_over_the_file_and_a_configmap_style_swap() {
    let tmp = tempfile::TempDir::new().unwrap();
    // ConfigMap layout: reload.toml -> ..data/reload.toml, ..data -> ..v1
    std::fs::create_dir(tmp.path().join("..v1")).unwrap();
    std::fs::write(tmp.path().join("..v1/reload.toml"), BASE).unwrap();
    std::os::unix::fs::symlink("..v1", tmp.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/reload.toml", tmp.path().join("reload.toml")).unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let _w = watch_file(&tmp.path().join("reload.toml"), tx).unwrap();

    std::fs::create_dir(tmp.path().join("..v2")).unwrap();
    std::fs::write(tmp.path().join("..v2/reload.toml"), "# v2\n").unwrap();
    std::os::unix::fs::symlink("..v2", tmp.path().join("..data_tmp")).unwrap();
    std::fs::rename(tmp.path().join("..data_tmp"), tmp.path().join("..data")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no event for a ConfigMap swap")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("reload.toml")).unwrap(),
        "# v2\n"
    );

    // A plain file replaced by rename (what editors do).
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    std::fs::write(plain.join("c.toml"), BASE).unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let _w = watch_file(&plain.join("c.toml"), tx).unwrap();
    // Unrelated files in the directory do not count.
    std::fs::write(plain.join("c.log"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "an unrelated file woke the reloader");
    std::fs::write(plain.join(".c.toml.swp"), "new").unwrap();
    std::fs::rename(plain.join(".c.toml.swp"), plain.join("c.toml")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no event for a rename over the file")
        .unwrap();
}
