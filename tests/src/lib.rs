//! Harness for the end-to-end tests: a real kube-apiserver and etcd started by
//! `dev_setup/cluster-up.sh`, the real `event-collector` binary, and readers
//! for what it wrote. Nothing here is a mock.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A throw-away server that a `dev_setup/<name>-up.sh` script started in a new
/// temp folder: the folder and the KEY=value lines of the env file the script
/// printed. `<name>-down.sh` stops it and removes the folder when dropped.
pub struct DevServer {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
    name: &'static str,
}

impl DevServer {
    /// Runs `dev_setup/<name>-up.sh ARGS... DIR` (`name` is cluster, es or kafka).
    pub fn start(name: &'static str, args: &[&str]) -> Result<DevServer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ec-{name}-"))
            .tempdir()?
            .keep();
        let script = format!("dev_setup/{name}-up.sh");
        let out = Command::new("bash")
            .arg(repo_root().join(&script))
            .args(args)
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {script}"))?;
        if !out.status.success() {
            bail!("{script} {} failed ({})", args.join(" "), out.status);
        }
        let env_file = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&env_file).with_context(|| format!("reading {env_file}"))?;
        let env = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.trim().trim_start_matches("export ").split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
            .collect();
        Ok(DevServer { dir, env, name })
    }

    /// The value of `key` in the env file ("" if absent).
    pub fn get(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or("")
    }

    /// Runs the restart script the env file names under `key` (e.g.
    /// `RESTART_ES`) with one argument (`--stop`, `--start`, `--kill`, seconds).
    pub fn ctl(&self, key: &str, arg: &str) {
        let ok = Command::new("bash")
            .arg(self.get(key))
            .arg(arg)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{} {arg} failed", self.get(key));
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join(format!("dev_setup/{}-down.sh", self.name)))
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

/// A running test cluster (etcd + kube-apiserver); stopped when dropped.
pub struct Cluster {
    pub server: DevServer,
}

impl Cluster {
    /// Starts a fresh etcd + kube-apiserver on free loopback ports.
    pub fn start() -> Result<Cluster> {
        Ok(Cluster {
            server: DevServer::start("cluster", &[])?,
        })
    }

    pub fn get(&self, key: &str) -> &str {
        self.server.get(key)
    }

    pub fn admin_kubeconfig(&self) -> &str {
        self.get("ADMIN_KUBECONFIG")
    }

    pub fn collector_kubeconfig(&self) -> &str {
        self.get("COLLECTOR_KUBECONFIG")
    }

    /// A kube client as the admin user.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(self.admin_kubeconfig())?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// Runs kubectl with the given kubeconfig; returns (success, stdout+stderr).
    pub fn kubectl(&self, kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> Result<(bool, String)> {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("running kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// Creates a namespace as admin.
    pub fn create_namespace(&self, name: &str) -> Result<()> {
        let (ok, out) = self.kubectl(self.admin_kubeconfig(), &["create", "namespace", name], None)?;
        if !ok && !out.contains("AlreadyExists") {
            bail!("kubectl create namespace {name}: {out}");
        }
        Ok(())
    }
}

/// The `event-collector` binary of the same profile as this test, built once.
pub fn collector_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-binary>
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let profile = profile_dir.file_name().and_then(|s| s.to_str()).unwrap_or("debug");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // The same package selection as `cargo test --workspace`, so features
        // resolve the same way: building only `-p event-collector` would
        // rebuild its dependencies with other features, and overwrite the binary
        // that the workspace test run just built.
        cmd.current_dir(repo_root())
            .args(["build", "-q", "--workspace", "--all-targets"]);
        if profile != "debug" {
            cmd.args(["--profile", if profile == "release" { "release" } else { profile }]);
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building event-collector failed");
        profile_dir.join("event-collector")
    })
}

/// A running collector process; killed when dropped.
pub struct Collector {
    pub child: Child,
    pub log: PathBuf,
}

impl Collector {
    /// Starts `event-collector --config CONFIG --kubeconfig KC` with logs to a file.
    pub fn start(config: &Path, kubeconfig: &str, extra: &[&str]) -> Result<Collector> {
        let log = config.with_extension("log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new(collector_bin())
            .arg("--config")
            .arg(config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("starting event-collector")?;
        Ok(Collector { child, log })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                bail!("collector did not stop within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every JSON line in a Volume exporter's directory (plain and gzipped files), in file-name order.
pub fn read_volume(dir: &Path) -> Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Ok(Vec::new()),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let text = if name.ends_with(".jsonl.gz") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(&f)?).read_to_string(&mut s)?;
            s
        } else if name.ends_with(".jsonl") {
            std::fs::read_to_string(&f)?
        } else {
            continue;
        };
        // A last line without its newline is being written (or was torn by a kill): not there yet.
        for line in text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(str::trim_end)
        {
            if line.is_empty() {
                continue;
            }
            out.push(serde_json::from_str(line).with_context(|| format!("{}: bad line {line}", f.display()))?);
        }
    }
    Ok(out)
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the Volume directory holds at least `n` events; returns them.
pub fn wait_for_events(dir: &Path, n: usize, timeout: Duration) -> Vec<Value> {
    wait_for(timeout, || read_volume(dir).ok().filter(|v| v.len() >= n))
        .unwrap_or_else(|| read_volume(dir).unwrap_or_default())
}

/// Creating Events through either API, as a real client would.
pub mod events {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
    use k8s_openapi::api::events::v1::{Event as V1Event, EventSeries as V1Series};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;
    use kube::api::{Api, Patch, PatchParams, PostParams};

    fn regarding(ns: &str, kind: &str, name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some(kind.into()),
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            api_version: Some("v1".into()),
            ..Default::default()
        }
    }

    /// A core/v1 Event the way kubelet writes one (count, first/lastTimestamp, source).
    pub fn core(ns: &str, name: &str, type_: &str, reason: &str, kind: &str, object: &str, message: &str) -> CoreEvent {
        let now = Time(Timestamp::now());
        CoreEvent {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            involved_object: regarding(ns, kind, object),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("node-1".into()),
            }),
            ..Default::default()
        }
    }

    /// An events.k8s.io/v1 Event the way a modern controller writes one.
    pub fn v1(ns: &str, name: &str, type_: &str, reason: &str, kind: &str, object: &str, note: &str) -> V1Event {
        V1Event {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            regarding: Some(regarding(ns, kind, object)),
            reason: Some(reason.into()),
            note: Some(note.into()),
            type_: Some(type_.into()),
            action: Some("Testing".into()),
            reporting_controller: Some("e2e.example.com/controller".into()),
            reporting_instance: Some("e2e-0".into()),
            ..Default::default()
        }
    }

    pub async fn create_core(client: &kube::Client, ev: &CoreEvent) -> anyhow::Result<CoreEvent> {
        let ns = ev.metadata.namespace.as_deref().unwrap_or("default");
        Ok(Api::<CoreEvent>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), ev)
            .await?)
    }

    pub async fn create_v1(client: &kube::Client, ev: &V1Event) -> anyhow::Result<V1Event> {
        let ns = ev.metadata.namespace.as_deref().unwrap_or("default");
        Ok(Api::<V1Event>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), ev)
            .await?)
    }

    /// Records a repeat the way client-go's core recorder does: count and lastTimestamp go up.
    pub async fn repeat_core(client: &kube::Client, ns: &str, name: &str, count: i32) -> anyhow::Result<CoreEvent> {
        let patch = serde_json::json!({"count": count, "lastTimestamp": Time(Timestamp::now())});
        Ok(Api::<CoreEvent>::namespaced(client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }

    /// Records a repeat the way the events.k8s.io recorder does: series count and lastObservedTime.
    pub async fn repeat_v1(client: &kube::Client, ns: &str, name: &str, count: i32) -> anyhow::Result<V1Event> {
        let series = V1Series {
            count,
            last_observed_time: MicroTime(Timestamp::now()),
        };
        let patch = serde_json::json!({"series": series});
        Ok(Api::<V1Event>::namespaced(client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }

    /// A metadata-only change (a label), which is not a new occurrence.
    pub async fn label_core(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<CoreEvent> {
        let patch = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
        Ok(Api::<CoreEvent>::namespaced(client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }
}
