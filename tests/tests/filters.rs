//! End-to-end: the collector binary with the example WASM filters (built by
//! `dev_setup/build-filters.sh`) against a real kube-apiserver. A route chains
//! the Rust Warning-only filter and the Rust team enricher; another runs the
//! Python redaction enricher; then the Warning-only module file is replaced
//! while the collector runs and the new version takes over without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use event_collector_e2e::{Cluster, Collector, events, read_volume, repo_root, wait_for};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// Copies `filters/<name>/<name>.wasm` into `dir`.
fn example(dir: &Path, name: &str, as_name: &str) -> PathBuf {
    let src = repo_root().join(format!("filters/{name}/{name}.wasm"));
    assert!(
        src.is_file(),
        "{} is not built: run dev_setup/build-filters.sh",
        src.display()
    );
    let dst = dir.join(as_name);
    std::fs::copy(&src, &dst).expect("copy module");
    dst
}

fn by_uid<'a>(events: &'a [Value], uid: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["uid"] == uid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_filters_chain_enrich_and_hot_swap() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("shop").unwrap();
    let work = tempfile::tempdir().unwrap();
    let modules = work.path().join("filters");
    std::fs::create_dir_all(&modules).unwrap();
    let warn = example(&modules, "rust-warning-only", "warning-only.wasm");
    example(&modules, "rust-enrich-team", "enrich-team.wasm");
    example(&modules, "python-redact", "redact.wasm");
    let (warn_out, all_out) = (work.path().join("warnings"), work.path().join("all"));
    let config = work.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            r#"
cluster = "e2e"
[source]
api = "core/v1"

[[filters]]
name = "warning-only"
module = "{m}/warning-only.wasm"
timeout = "500ms"

[[filters]]
name = "team"
module = "{m}/enrich-team.wasm"
timeout = "500ms"
config = {{ teams = {{ shop = "web-shop" }}, default_team = "unowned" }}

[[filters]]
name = "redact"
module = "{m}/redact.wasm"
timeout = "2s"

[[exporters]]
name = "warnings"
type = "volume"
path = "{w}"
batch_timeout = "20ms"

[[exporters]]
name = "all"
type = "volume"
path = "{a}"
batch_timeout = "20ms"

[[routes]]
name = "warnings"
filters = ["warning-only", "team"]
exporters = ["warnings"]
continue = true

[[routes]]
name = "all"
filters = ["redact"]
exporters = ["all"]
"#,
            m = modules.display(),
            w = warn_out.display(),
            a = all_out.display(),
        ),
    )
    .unwrap();
    let collector = Collector::start(&config, cluster.collector_kubeconfig(), &[]).expect("collector");
    let ready = wait_for(WAIT, || {
        collector.log_text().contains("watch established").then_some(())
    });
    assert!(ready.is_some(), "log:\n{}", collector.log_text());

    let client = cluster.admin_client().await.unwrap();
    let mut warning_uids = Vec::new();
    let mut normal_uids = Vec::new();
    for i in 0..3 {
        let w = events::core(
            "shop",
            &format!("w{i}"),
            "Warning",
            "BackOff",
            "Pod",
            "web-0",
            "Back-off pulling image: token=Zk9sT3xQpL2mN8vB4rY6wE1uI0oA5sD7fG3hJ9kL from 10.1.2.3",
        );
        warning_uids.push(events::create_core(&client, &w).await.unwrap().metadata.uid.unwrap());
        let n = events::core(
            "shop",
            &format!("n{i}"),
            "Normal",
            "Pulled",
            "Pod",
            "web-0",
            "pulled by ops@example.com",
        );
        normal_uids.push(events::create_core(&client, &n).await.unwrap().metadata.uid.unwrap());
    }

    let all = wait_for(WAIT, || {
        let v = read_volume(&all_out).unwrap_or_default();
        (v.len() >= 6).then_some(v)
    })
    .unwrap_or_else(|| panic!("all: {:?}\nlog:\n{}", read_volume(&all_out), collector.log_text()));
    let warnings = wait_for(WAIT, || {
        let v = read_volume(&warn_out).unwrap_or_default();
        (v.len() >= 3).then_some(v)
    })
    .unwrap_or_else(|| panic!("warnings: {:?}\nlog:\n{}", read_volume(&warn_out), collector.log_text()));

    // Warning-only + team enricher: exactly the warnings, each once, enriched.
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    for uid in &warning_uids {
        let got = by_uid(&warnings, uid);
        assert_eq!(got.len(), 1, "{uid}: {warnings:?}");
        assert_eq!(got[0]["labels"]["team"], "web-shop", "{}", got[0]);
        assert_eq!(got[0]["extra"]["severity"], "high", "{}", got[0]);
    }
    // Python redaction: every event, with the token, the IP address and the e-mail masked.
    assert_eq!(all.len(), 6, "{all:?}");
    for e in &all {
        let msg = e["message"].as_str().unwrap();
        assert!(!msg.contains("Zk9sT3xQpL2mN8vB4rY6wE1uI0oA5sD7fG3hJ9kL"), "{msg}");
        assert!(!msg.contains("10.1.2.3"), "{msg}");
        assert!(!msg.contains("ops@example.com"), "{msg}");
    }

    // Hot swap: the Warning-only module is replaced by the AssemblyScript
    // max-length filter (it keeps short messages of any type), in place.
    let tmp = modules.join("incoming.wasm.tmp");
    std::fs::copy(
        repo_root().join("filters/assemblyscript-max-message/assemblyscript-max-message.wasm"),
        &tmp,
    )
    .unwrap();
    std::fs::rename(&tmp, &warn).unwrap();
    let swapped = wait_for(WAIT, || {
        collector
            .log_text()
            .lines()
            .find(|l| l.contains("filter module swapped") && l.contains("warning-only"))
            .map(str::to_string)
    });
    let line = swapped.unwrap_or_else(|| panic!("no swap; log:\n{}", collector.log_text()));
    assert!(line.contains("old_sha256=") && line.contains("new_sha256="), "{line}");

    let n = events::core("shop", "after-swap", "Normal", "Pulled", "Pod", "web-0", "short");
    let after = events::create_core(&client, &n).await.unwrap().metadata.uid.unwrap();
    let warnings = wait_for(WAIT, || {
        let v = read_volume(&warn_out).unwrap_or_default();
        (!by_uid(&v, &after).is_empty()).then_some(v)
    })
    .unwrap_or_else(|| panic!("new version not used; log:\n{}", collector.log_text()));
    let got = by_uid(&warnings, &after);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["labels"]["team"], "web-shop");
    assert_eq!(got[0]["extra"]["severity"], "low");
    // Nothing sent twice across the swap, and the Normal events from before it stayed out.
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    for uid in &normal_uids {
        assert!(by_uid(&warnings, uid).is_empty(), "{uid} was kept by the old version");
    }
}
