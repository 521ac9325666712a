//! End-to-end: hot config reload of the real binary against a real
//! kube-apiserver. A file change adds a route to a second Volume exporter
//! (the first keeps running and misses nothing), an invalid file is rejected
//! with file:line:col while the running config goes on, and SIGHUP reloads.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use event_collector_e2e::{Cluster, Collector, events, wait_for, wait_for_events};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET over plain HTTP/1.1: the body, or None if nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_string())
}

fn reloads(port: u16, result: &str) -> Option<f64> {
    let series = format!("event_collector_config_reloads_total{{result=\"{result}\"}} ");
    get(port, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

fn volume(name: &str, out: &Path) -> String {
    format!(
        "[[exporters]]\nname = \"{name}\"\ntype = \"volume\"\npath = \"{}\"\nfsync = \"always\"\nbatch_timeout = \"20ms\"\n\n",
        out.display()
    )
}

fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Every event name once (no duplicates), as a set.
fn unique(events: &[Value]) -> HashSet<String> {
    let n = names(events);
    let set: HashSet<String> = n.iter().cloned().collect();
    assert_eq!(set.len(), n.len(), "duplicates in {n:?}");
    set
}

async fn create(client: &kube::Client, prefix: &str, range: std::ops::Range<usize>, type_: &str) {
    for i in range {
        let ev = events::core("e2e", &format!("{prefix}-{i}"), type_, "Test", "Pod", "web-0", "m");
        events::create_core(client, &ev).await.expect("create event");
    }
}

fn set_of(prefix: &str, range: std::ops::Range<usize>) -> HashSet<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn config_changes_apply_live_invalid_ones_are_rejected_and_sighup_reloads() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").expect("namespace");
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_a, out_b) = (dir.path().join("a"), dir.path().join("b"));
    let port = free_port();
    let head = format!("cluster = \"e2e\"\n[http]\naddress = \"127.0.0.1:{port}\"\n\n");
    let config = dir.path().join("collector.toml");
    let v1 = format!(
        "{head}{}[[routes]]\nname = \"all\"\ndefault = true\nexporters = [\"a\"]\n",
        volume("a", &out_a)
    );
    std::fs::write(&config, &v1).expect("write config");
    let c = Collector::start(&config, cluster.collector_kubeconfig(), &[]).expect("collector");
    let ready = wait_for(WAIT, || get(port, "/readyz"));
    assert!(ready.is_some(), "not ready:\n{}", c.log_text());
    let client = cluster.admin_client().await.expect("client");

    // 1. Config v1: everything to A.
    create(&client, "w", 0..5, "Warning").await;
    let got = wait_for_events(&out_a, 5, WAIT);
    assert_eq!(unique(&got), set_of("w", 0..5), "{}", c.log_text());

    // 2. Rewrite the file: warnings also go to a new exporter B; A is unchanged.
    let v2 = format!(
        "{head}{}{}[[routes]]\nname = \"warnings\"\nexporters = [\"a\", \"b\"]\n[routes.match]\ntype = \"Warning\"\n\n[[routes]]\nname = \"rest\"\ndefault = true\nexporters = [\"a\"]\n",
        volume("a", &out_a),
        volume("b", &out_b)
    );
    std::fs::write(&config, &v2).expect("write config");
    let applied = wait_for(WAIT, || reloads(port, "applied").filter(|v| *v >= 1.0));
    assert_eq!(applied, Some(1.0), "{}", c.log_text());
    let log = c.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("config reloaded"))
        .unwrap_or_else(|| panic!("no reload summary in\n{log}"));
    assert!(line.contains(r#"exporters_kept=["a"]"#), "{line}");
    assert!(line.contains(r#"exporters_added=["b"]"#), "{line}");
    assert!(line.contains(r#"routes_added=["warnings", "rest"]"#), "{line}");
    assert!(line.contains(r#"routes_removed=["all"]"#), "{line}");

    create(&client, "w", 5..10, "Warning").await;
    create(&client, "n", 0..3, "Normal").await;
    let got_a = wait_for_events(&out_a, 13, WAIT);
    let got_b = wait_for_events(&out_b, 5, WAIT);
    let mut want_a = set_of("w", 0..10);
    want_a.extend(set_of("n", 0..3));
    assert_eq!(unique(&got_a), want_a, "{}", c.log_text());
    assert_eq!(unique(&got_b), set_of("w", 5..10), "{}", c.log_text());

    // 3. An invalid file: rejected with its place, the running config goes on.
    let bad = format!("{v2}\n[[routes]]\nname = \"broken\"\nexporters = [\"nope\"]\n");
    let bad_line = bad.lines().count();
    std::fs::write(&config, &bad).expect("write config");
    let rejected = wait_for(WAIT, || reloads(port, "rejected").filter(|v| *v >= 1.0));
    assert_eq!(rejected, Some(1.0), "{}", c.log_text());
    let log = c.log_text();
    let place = format!(
        "{}:{bad_line}:14: route `broken` sends to exporter `nope`",
        config.display()
    );
    assert!(
        log.lines()
            .any(|l| l.contains("config reload rejected") && l.contains(&place)),
        "no rejection naming {place} in\n{log}"
    );
    assert_eq!(reloads(port, "applied"), Some(1.0));
    create(&client, "w", 10..13, "Warning").await;
    let got_a = wait_for_events(&out_a, 16, WAIT);
    let got_b = wait_for_events(&out_b, 8, WAIT);
    want_a.extend(set_of("w", 10..13));
    assert_eq!(unique(&got_a), want_a, "{}", c.log_text());
    assert_eq!(unique(&got_b), set_of("w", 5..13), "{}", c.log_text());

    // 4. Back to v2 by file, then SIGHUP: reloads (nothing changes, nothing restarts).
    std::fs::write(&config, &v2).expect("write config");
    let applied = wait_for(WAIT, || reloads(port, "applied").filter(|v| *v >= 2.0));
    assert_eq!(applied, Some(2.0), "{}", c.log_text());
    let pid = c.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let applied = wait_for(WAIT, || reloads(port, "applied").filter(|v| *v >= 3.0));
    assert_eq!(applied, Some(3.0), "{}", c.log_text());
    let log = c.log_text();
    let line = log.lines().rfind(|l| l.contains("config reloaded")).unwrap_or_default();
    assert!(line.contains("SIGHUP"), "{line}");
    assert!(line.contains(r#"exporters_kept=["a", "b"]"#), "{line}");
    create(&client, "w", 13..15, "Warning").await;
    let got_b = wait_for_events(&out_b, 10, WAIT);
    assert_eq!(unique(&got_b), set_of("w", 5..15), "{}", c.log_text());
    assert_eq!(unique(&wait_for_events(&out_a, 18, WAIT)).len(), 18);
    assert!(c.log_text().lines().all(|l| !l.contains("panicked")));
}
