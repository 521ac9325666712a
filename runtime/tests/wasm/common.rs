//! Shared by the filter host's tests and benchmarks: the test guest component
//! (built once with `cargo build --target wasm32-wasip2`), core modules
//! written in WAT, sample events, and host setup.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use event_collector::config::{FilterConfig, WasmConfig};
use event_collector::event::Event;
use event_collector::filter::{ChainOutcome, FilterHost, FilterId, HostOptions};
use event_collector::metrics::Metrics;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static GUEST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static GUEST_V0_1: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static GUEST_V0_2: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The test guest component (`runtime/tests/wasm/guest`, contract 0.3.0), built on first use.
pub fn guest_component() -> PathBuf {
    GUEST
        .get_or_init(|| build_guest(None))
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The same test guest built against the 0.2.0 contract (`--features contract-0-2`).
pub fn guest_component_v0_2() -> PathBuf {
    GUEST_V0_2
        .get_or_init(|| build_guest(Some("contract-0-2")))
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The same test guest built against the 0.1.0 contract (`--features contract-0-1`).
pub fn guest_component_v0_1() -> PathBuf {
    GUEST_V0_1
        .get_or_init(|| build_guest(Some("contract-0-1")))
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the test guest (with `feature`, in its own target dir) and copies
/// the result to a path of its own.
fn build_guest(feature: Option<&str>) -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wasm/guest");
    // Beside the example filters' guest builds, outside the checkout, so fresh clones reuse it.
    let mut target = std::env::var_os("EVENT_COLLECTOR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/event-collector")))
        .map_or_else(|| workspace().join("target/wasm-guests"), |c| c.join("wasm-target"));
    if let Some(f) = feature {
        // Its own target dir: the same artifact name must not be overwritten
        // while another test binary copies the default build.
        target = target.join(f);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&dir)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target);
    if let Some(f) = feature {
        cmd.args(["--features", f]);
    }
    for var in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the test guest failed (is `rustup target add wasm32-wasip2` done?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let wasm = target.join("wasm32-wasip2/release/event_collector_test_guest.wasm");
    if wasm.is_file() {
        Ok(wasm)
    } else {
        Err(format!("{} was not built", wasm.display()))
    }
}

/// Copies the test guest into `dir` as `name`.
pub fn guest_copy(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(guest_component(), &to).expect("copy guest");
    to
}

/// Copies the 0.1.0-contract test guest into `dir` as `name`.
pub fn guest_copy_v0_1(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(guest_component_v0_1(), &to).expect("copy guest");
    to
}

/// WAT string escape: every byte as `\hh`.
fn wat_bytes(s: &str) -> String {
    s.bytes().map(|b| format!("\\{b:02x}")).collect()
}

/// The pieces every test core module shares: memory (4 pages), a bump `alloc`
/// that always hands out offset 65536 (growing memory if needed).
const CORE_PRELUDE: &str = r#"
  (memory (export "memory") 4)
  (global $count (mut i32) (i32.const 0))
  (func (export "alloc") (param $n i32) (result i32)
    (if (i32.gt_u (i32.add (i32.const 131072) (local.get $n)) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 16)) (i32.const 2))))))
    (i32.const 65536))
"#;

fn packed(ptr: usize, len: usize) -> String {
    format!("(i64.or (i64.shl (i64.const {ptr}) (i64.const 32)) (i64.const {len}))")
}

/// A core module whose `process` runs `body` (WAT instructions producing an
/// i64), with `data` placed at offset 1024 and extra `imports`/`funcs`.
pub fn core_wat(imports: &str, data: &str, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        "(module {imports} {CORE_PRELUDE}
           (data (i32.const 1024) \"{}\")
           (func (export \"process\") (param $p i32) (param $n i32) (result i64) {body})
           {extra})",
        wat_bytes(data)
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad WAT: {e}\n{text}"))
}

/// A core module that always answers `output` (a verdict JSON).
pub fn core_const(output: &str) -> Vec<u8> {
    core_wat("", output, &packed(1024, output.len()), "")
}

/// Keeps every event (returns 0).
pub fn core_keep() -> Vec<u8> {
    core_wat("", "", "(i64.const 0)", "")
}

/// Keeps every event, with a constant baked in so each `tag` has its own sha256.
pub fn core_keep_tagged(tag: &str) -> Vec<u8> {
    core_wat("", tag, "(i64.const 0)", "")
}

pub fn core_loop() -> Vec<u8> {
    core_wat("", "", "(loop $l (br $l)) (unreachable)", "")
}

/// Grows memory by 1 MiB until refused, then traps (like an allocator abort).
pub fn core_bomb() -> Vec<u8> {
    core_wat(
        "",
        "",
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)",
        "",
    )
}

pub fn core_trap() -> Vec<u8> {
    core_wat("", "", "(unreachable)", "")
}

/// Alternates by call count in this instance: odd calls keep, even calls drop.
pub fn core_counter() -> Vec<u8> {
    let drop = r#"{"verdict":"drop"}"#;
    core_wat(
        "",
        drop,
        &format!(
            "(global.set $count (i32.add (global.get $count) (i32.const 1)))
             (if (result i64) (i32.and (global.get $count) (i32.const 1))
               (then (i64.const 0))
               (else {}))",
            packed(1024, drop.len())
        ),
        "",
    )
}

/// Replaces the event with itself plus `"extra":{"v":"<tag>"}`: proves which
/// version processed an event.
pub fn core_tagger(tag: &str) -> Vec<u8> {
    let prefix = format!(r#"{{"verdict":"replace","event":{{"extra":{{"v":"{tag}"}},"#);
    let l = prefix.len();
    let body = format!(
        "(memory.copy (i32.const 131072) (i32.const 1024) (i32.const {l}))
         (memory.copy (i32.const {at}) (i32.add (local.get $p) (i32.const 1)) (i32.sub (local.get $n) (i32.const 1)))
         (i32.store8 (i32.add (i32.const {at}) (i32.sub (local.get $n) (i32.const 1))) (i32.const 125))
         (i64.or (i64.shl (i64.const 131072) (i64.const 32))
                 (i64.extend_i32_u (i32.add (local.get $n) (i32.const {l}))))",
        at = 131072 + l,
    );
    core_wat("", &prefix, &body, "")
}

/// Opens `secret.txt` in preopened fd 3 (read-only): drop if it opened, error if not.
pub fn core_open() -> Vec<u8> {
    let imports = r#"(import "wasi_snapshot_preview1" "path_open"
        (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#;
    let data = r#"secret.txt{"verdict":"drop"}{"error":"opening secret.txt was denied"}"#;
    let drop_at = 1024 + 10;
    let err_at = drop_at + 18;
    let body = format!(
        "(if (result i64) (i32.eqz (call $path_open (i32.const 3) (i32.const 1) (i32.const 1024) (i32.const 10)
                (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 2048)))
           (then {})
           (else {}))",
        packed(drop_at, r#"{"verdict":"drop"}"#.len()),
        packed(err_at, r#"{"error":"opening secret.txt was denied"}"#.len())
    );
    core_wat(imports, data, &body, "")
}

/// Drops the event when the guest sees at least one environment variable.
pub fn core_env() -> Vec<u8> {
    let imports = r#"(import "wasi_snapshot_preview1" "environ_sizes_get"
        (func $env_sizes (param i32 i32) (result i32)))"#;
    let drop = r#"{"verdict":"drop"}"#;
    let body = format!(
        "(drop (call $env_sizes (i32.const 2048) (i32.const 2052)))
         (if (result i64) (i32.load (i32.const 2048)) (then {}) (else (i64.const 0)))",
        packed(1024, drop.len())
    );
    core_wat(imports, drop, &body, "")
}

/// Logs "core says hi" at warn level through `event_collector.log`, then keeps.
pub fn core_logger() -> Vec<u8> {
    let imports = r#"(import "event_collector" "log" (func $log (param i32 i32 i32)))"#;
    let msg = "core says hi";
    core_wat(
        imports,
        msg,
        &format!(
            "(call $log (i32.const 3) (i32.const 1024) (i32.const {})) (i64.const 0)",
            msg.len()
        ),
        "",
    )
}

/// Runs `f` with this thread's log lines captured.
///
/// One global subscriber routes each line to the capture of the thread that
/// logged it. A scoped subscriber (`with_default`) per test is not enough:
/// tracing caches a callsite's interest process-wide, computed on the first
/// thread that reaches it, so a sibling test thread without a subscriber
/// could turn a line off for everyone (a flake seen in CI).
pub fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(|| ThreadCapture)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("capture_logs installs the binary's only global subscriber");
    });
    let capture = LogCapture::default();
    CAPTURE.with(|c| *c.borrow_mut() = Some(capture.clone()));
    let r = f();
    CAPTURE.with(|c| *c.borrow_mut() = None);
    (r, capture.text())
}

thread_local! {
    /// Where this thread's log lines go while `capture_logs` runs.
    static CAPTURE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the logging thread's capture, if any (else the line is dropped).
struct ThreadCapture;

impl std::io::Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(capture) = c.borrow_mut().as_mut() {
                capture.write_all(buf)?;
            }
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `init` answers with an error message: the module must be rejected.
pub fn core_init_fails() -> Vec<u8> {
    let msg = "no thanks";
    core_wat(
        "",
        msg,
        "(i64.const 0)",
        &format!(
            "(func (export \"init\") (param i32 i32) (result i64) {})",
            packed(1024, msg.len())
        ),
    )
}

/// A normalized event of about 1 KB.
pub fn event(uid: &str, reason: &str) -> Event {
    let v = serde_json::json!({
        "schema_version": 1,
        "cluster": "test-cluster",
        "api": "events.k8s.io/v1",
        "watch_type": "ADDED",
        "uid": uid,
        "resource_version": "12345",
        "name": "web-7d9f8c6b5-abcde.17a1b2c3d4e5f6a7",
        "namespace": "payments",
        "type": "Warning",
        "reason": reason,
        "message": "Back-off restarting failed container web in pod web-7d9f8c6b5-abcde_payments(0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0): the container exited with code 137 after the liveness probe failed three times in a row; see the previous logs for details",
        "note": null,
        "action": "Restarting",
        "object": {
            "kind": "Pod",
            "namespace": "payments",
            "name": "web-7d9f8c6b5-abcde",
            "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "api_version": "v1",
            "field_path": "spec.containers{web}",
            "resource_version": "987654"
        },
        "related": null,
        "reporting_controller": "kubelet",
        "reporting_instance": "node-a-1",
        "count": 7,
        "count_delta": 1,
        "first_timestamp": "2026-05-01T10:00:00Z",
        "last_timestamp": "2026-05-01T10:05:00Z",
        "timestamp": "2026-05-01T10:05:00Z",
        "labels": {"app": "web", "tier": "frontend"},
        "annotations": {"team": "payments"}
    });
    serde_json::from_value(v).expect("sample event")
}

/// Test defaults: a small pool, the cache in `cache_dir`.
pub fn wasm_config(cache_dir: &Path) -> WasmConfig {
    WasmConfig {
        cache_dir: Some(cache_dir.to_path_buf()),
        max_instances: 16,
        watch_debounce: std::time::Duration::from_millis(50),
        ..WasmConfig::default()
    }
}

/// Writes `bytes` as `dir/name` and returns a filter config for it.
pub fn filter_file(dir: &Path, name: &str, bytes: &[u8]) -> FilterConfig {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("write module");
    let mut f = FilterConfig::new(name, path);
    f.watch = false;
    f
}

/// The timeout tests use: the default 10 ms is wall-clock time, and a test
/// machine shared with builds can deschedule a thread for longer than that.
pub const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// A host for `filters`; filters left at the default timeout get [`TEST_TIMEOUT`].
pub fn host(filters: &[FilterConfig], cache_dir: &Path) -> (Arc<FilterHost>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let default_timeout = FilterConfig::new("", "").timeout;
    let filters: Vec<FilterConfig> = filters
        .iter()
        .cloned()
        .map(|mut f| {
            if f.timeout == default_timeout {
                f.timeout = TEST_TIMEOUT;
            }
            f
        })
        .collect();
    let host = FilterHost::with_options(
        &filters,
        &wasm_config(cache_dir),
        metrics.clone(),
        HostOptions::default(),
    )
    .unwrap_or_else(|e| panic!("host: {e}"));
    (host, metrics)
}

/// Captures log lines (for asserting what was logged).
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The id of the filter `name`, as a one-filter chain.
pub fn one(host: &FilterHost, name: &str) -> Vec<FilterId> {
    host.chain(&[name]).expect("filter id")
}

/// The event and `replaced` of a `Keep` outcome; panics on anything else.
pub fn keep_event(out: ChainOutcome) -> (Event, bool) {
    match out {
        ChainOutcome::Keep { event, replaced } => (event, replaced),
        other => panic!("expected keep, got {other:?}"),
    }
}
