//! End-to-end: the collector's HTTP endpoint against a real kube-apiserver:
//! /healthz, /readyz (503 before the watch is up and with an unreachable
//! exporter, 200 when ready) and /metrics (specific series and values after
//! known events).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use event_collector_e2e::{Cluster, Collector, events, wait_for, wait_for_events};

const WAIT: Duration = Duration::from_secs(60);

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET over plain HTTP/1.1; (status, body), or None if nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of one exact series (`name{labels}`) in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("collector.toml");
    std::fs::write(&path, body).expect("write config");
    path
}

fn volume_exporter(out: &Path) -> String {
    format!(
        r#"
[[exporters]]
name = "local"
type = "volume"
path = "{}"
fsync = "always"
batch_timeout = "20ms"
"#,
        out.display()
    )
}

#[tokio::test]
async fn readyz_is_503_until_the_watch_is_up_and_while_an_exporter_cannot_deliver() {
    let cluster = Cluster::start().expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events");

    // 1. An API server that does not answer: alive, but the watch is not established.
    let kc = std::fs::read_to_string(cluster.collector_kubeconfig()).expect("kubeconfig");
    let url = cluster.get("APISERVER_URL").to_string();
    assert!(kc.contains(&url), "kubeconfig names {url}");
    let dead_kc = dir.path().join("dead.kubeconfig");
    std::fs::write(
        &dead_kc,
        kc.replace(&url, &format!("https://127.0.0.1:{}", free_port())),
    )
    .expect("write");
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "cluster = \"e2e\"\n[http]\naddress = \"127.0.0.1:{port}\"\n{}\n[[routes]]\nname = \"all\"\ndefault = true\nexporters = [\"local\"]\n",
            volume_exporter(&out)
        ),
    );
    let mut c =
        Collector::start(&config, &dead_kc.display().to_string(), &["--connect-timeout", "5m"]).expect("collector");
    let health = wait_for(WAIT, || get(port, "/healthz"));
    assert_eq!(health, Some((200, "ok\n".to_string())), "{}", c.log_text());
    let (status, body) = get(port, "/readyz").expect("readyz");
    assert_eq!(status, 503);
    assert!(
        body.contains("watch events.k8s.io/v1 in all namespaces: not established"),
        "{body}"
    );
    let (status, scrape) = get(port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert_eq!(value(&scrape, "event_collector_ready"), Some(0.0), "{scrape}");
    c.terminate().expect("stop");

    // 2. The real API server, but an Elasticsearch exporter at a closed port:
    // the watch comes up, readiness stays 503 and names the exporter.
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
cluster = "e2e"
[http]
address = "127.0.0.1:{port}"
{}
[[exporters]]
name = "es"
type = "elasticsearch"
url = "http://127.0.0.1:{}"

[[routes]]
name = "all"
default = true
exporters = ["local", "es"]
"#,
            volume_exporter(&out),
            free_port()
        ),
    );
    let c = Collector::start(&config, cluster.collector_kubeconfig(), &[]).expect("collector");
    let body = wait_for(WAIT, || {
        get(port, "/readyz").filter(|(s, b)| *s == 503 && !b.contains("not established"))
    });
    let (_, body) = body.unwrap_or_else(|| panic!("readyz: {:?}\n{}", get(port, "/readyz"), c.log_text()));
    assert!(body.starts_with("exporter es: NotReady: "), "{body}");
    assert!(!body.contains("exporter local"), "{body}");
    let (_, scrape) = get(port, "/metrics").expect("metrics");
    assert_eq!(value(&scrape, "event_collector_ready"), Some(0.0), "{scrape}");
}

#[tokio::test]
async fn metrics_count_what_happened_and_readyz_turns_200() {
    let cluster = Cluster::start().expect("cluster");
    cluster.create_namespace("e2e").expect("namespace");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("events");
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
cluster = "e2e"
[http]
address = "127.0.0.1:{port}"
[metrics]
namespace_label = true
{}
[[routes]]
name = "warnings"
exporters = ["local"]
[routes.match]
type = "Warning"

[[routes]]
name = "rest"
default = true
exporters = ["local"]
"#,
            volume_exporter(&out)
        ),
    );
    let c = Collector::start(&config, cluster.collector_kubeconfig(), &[]).expect("collector");
    let ready = wait_for(WAIT, || get(port, "/readyz").filter(|(s, _)| *s == 200));
    assert_eq!(
        ready,
        Some((200, "ok\n".to_string())),
        "{:?}\n{}",
        get(port, "/readyz"),
        c.log_text()
    );

    let client = cluster.admin_client().await.expect("client");
    for i in 0..5 {
        let ev = events::core(
            "e2e",
            &format!("warn-{i}"),
            "Warning",
            "BackOff",
            "Pod",
            "web-0",
            "Back-off",
        );
        events::create_core(&client, &ev).await.expect("create core");
    }
    for i in 0..3 {
        let ev = events::v1(
            "e2e",
            &format!("sched-{i}"),
            "Normal",
            "Scheduled",
            "Pod",
            "web-1",
            "Assigned",
        );
        events::create_v1(&client, &ev).await.expect("create v1");
    }
    let got = wait_for_events(&out, 8, WAIT);
    assert_eq!(got.len(), 8, "{}", c.log_text());

    // Acknowledgement and the scrape race by a few milliseconds: wait for the exporter count.
    let scrape = wait_for(WAIT, || {
        get(port, "/metrics")
            .map(|(_, s)| s)
            .filter(|s| value(s, r#"event_collector_exporter_events_total{exporter="local"}"#) == Some(8.0))
    })
    .unwrap_or_else(|| panic!("{:?}", get(port, "/metrics")));
    let v = |series: &str| value(&scrape, series).unwrap_or_else(|| panic!("no {series} in\n{scrape}"));
    assert_eq!(
        v(r#"event_collector_events_received_total{api="events.k8s.io/v1",kind="applied"}"#),
        8.0
    );
    assert_eq!(
        v(r#"event_collector_events_received_total{api="core/v1",kind="applied"}"#),
        0.0
    );
    assert_eq!(v(r#"event_collector_route_matched_total{route="warnings"}"#), 5.0);
    assert_eq!(v(r#"event_collector_route_matched_total{route="rest"}"#), 3.0);
    assert_eq!(
        v(r#"event_collector_kubernetes_events_total{type="Warning",reason="BackOff",kind="Pod",namespace="e2e"}"#),
        5.0
    );
    assert_eq!(
        v(r#"event_collector_kubernetes_events_total{type="Normal",reason="Scheduled",kind="Pod",namespace="e2e"}"#),
        3.0
    );
    assert_eq!(v(r#"event_collector_lag_seconds_count{exporter="local"}"#), 8.0);
    assert!(v(r#"event_collector_lag_seconds_sum{exporter="local"}"#) >= 0.0);
    assert_eq!(v(r#"event_collector_exporter_queue_depth{exporter="local"}"#), 0.0);
    assert_eq!(v("event_collector_ready"), 1.0);
    assert!(
        scrape.contains("# TYPE event_collector_checkpoint_age_seconds gauge"),
        "{scrape}"
    );
    assert!(scrape.ends_with("# EOF\n"), "OpenMetrics text");
    assert_eq!(get(port, "/healthz"), Some((200, "ok\n".to_string())));
    assert_eq!(get(port, "/nope").map(|(s, _)| s), Some(404));
}
