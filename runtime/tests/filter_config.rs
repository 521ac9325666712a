//! `[[filters]]` and `[wasm]` in the config file: defaults, paths, and
//! errors with file:line:col.

use std::path::Path;
use std::time::Duration;

use event_collector::config::{Config, OnDelete, OnError};

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("filters")).unwrap();
    std::fs::write(dir.path().join("filters/a.wasm"), b"\0asm\x01\0\0\0").unwrap();
    dir
}

fn parse(dir: &Path, src: &str) -> Result<Config, String> {
    let file = dir.join("collector.toml");
    std::fs::write(&file, src).unwrap();
    Config::load(&file).map_err(|e| e.to_string())
}

const EXPORTERS: &str = r#"
[[exporters]]
name = "out"
type = "stdout"

[[exporters]]
name = "dlq"
type = "stdout"
"#;

#[test]
fn filters_load_with_defaults_and_resolved_paths() {
    let dir = setup();
    let src = format!(
        r#"{EXPORTERS}
[wasm]
cache_dir = "cache"
cache_max_size = "64MiB"
max_instances = 8
epoch_tick = "2ms"
tiered = false

[[filters]]
name = "a"
module = "filters/a.wasm"

[[filters]]
name = "b"
module = "filters/a.wasm"
config = {{ teams = {{ payments = "money" }}, threshold = 3, on = true, at = 1979-05-27T07:32:00Z }}
on_error = "dead-letter"
dead_letter = "dlq"
timeout = "25ms"
memory_limit = "32MiB"
max_stack = "1MiB"
recycle_after_calls = 10
recycle_memory_above = 1048576
breaker_threshold = 2
breaker_cooldown = "1m"
on_delete = "bypass"
watch = false
allow_env = ["HOME"]
allow_read_dirs = ["filters"]

[[routes]]
name = "r"
default = true
filters = ["a", "b"]
exporters = ["out"]
"#
    );
    let c = parse(dir.path(), &src).expect("valid");
    assert_eq!(c.filters.len(), 2);
    let a = &c.filters[0];
    assert_eq!(a.module, dir.path().join("filters/a.wasm"));
    assert_eq!(a.config_json, "{}");
    assert_eq!(a.on_error, OnError::Pass);
    assert_eq!(a.timeout, Duration::from_millis(10));
    assert_eq!(a.memory_limit, 64 << 20);
    assert_eq!(a.max_stack, 512 << 10);
    assert_eq!(a.recycle_memory_threshold(), 32 << 20);
    assert_eq!((a.breaker_threshold, a.breaker_cooldown), (5, Duration::from_secs(30)));
    assert_eq!((a.on_delete, a.watch), (OnDelete::Keep, true));
    assert!(a.allow_env.is_empty() && a.allow_read_dirs.is_empty());
    let b = &c.filters[1];
    let cfg: serde_json::Value = serde_json::from_str(&b.config_json).unwrap();
    assert_eq!(
        cfg,
        serde_json::json!({"teams": {"payments": "money"}, "threshold": 3, "on": true, "at": "1979-05-27T07:32:00Z"})
    );
    assert_eq!(b.on_error, OnError::DeadLetter);
    assert_eq!(b.dead_letter.as_deref(), Some("dlq"));
    assert_eq!(b.timeout, Duration::from_millis(25));
    assert_eq!((b.memory_limit, b.max_stack), (32 << 20, 1 << 20));
    assert_eq!((b.recycle_after_calls, b.recycle_memory_threshold()), (10, 1 << 20));
    assert_eq!((b.breaker_threshold, b.breaker_cooldown), (2, Duration::from_secs(60)));
    assert_eq!((b.on_delete, b.watch), (OnDelete::Bypass, false));
    assert_eq!(b.allow_env, ["HOME"]);
    assert_eq!(b.allow_read_dirs, [dir.path().join("filters")]);
    assert_eq!(c.wasm.cache_dir, Some(dir.path().join("cache")));
    assert_eq!(c.wasm.cache_max_size, 64 << 20);
    assert_eq!(
        event_collector::config::WasmConfig::default().cache_max_size,
        512 << 20,
        "the module cache is bounded by default"
    );
    assert_eq!(c.wasm.max_instances, 8);
    assert_eq!(c.wasm.epoch_tick, Duration::from_millis(2));
    assert!(c.wasm.pooling && c.wasm.cache);
    assert!(
        !c.wasm.tiered,
        "tiered compilation is on by default and can be turned off"
    );
    assert!(event_collector::config::WasmConfig::default().tiered);
    assert_eq!(c.routes[0].filters.len(), 2);
}

/// Each error is `file:line:col: message`, at the offending key or value.
#[test]
fn filter_errors_point_at_the_place() {
    let dir = setup();
    let src = format!(
        r#"{EXPORTERS}
[wasm]
cache_max_size = "1KiB"

[[filters]]
name = "a"
module = "filters/a.wasm"
colour = "blue"

[[filters]]
name = "b"
module = "filters/a.wasm"
on_error = "explode"

[[filters]]
name = "c"
module = "filters/a.wasm"
on_error = "dead-letter"

[[filters]]
name = "d"
module = "filters/a.wasm"
on_error = "dead-letter"
dead_letter = "nowhere"

[[filters]]
name = "e"
module = "filters/missing.wasm"
timeout = "soon"

[[routes]]
name = "r"
default = true
filters = ["a", "ghost"]
exporters = ["out"]
"#
    );
    let e = parse(dir.path(), &src).unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no error mentions {needle:?}:\n{e}"))
            .to_string()
    };
    let at = |line: &str| {
        let rest = line.split("collector.toml:").nth(1).unwrap();
        let mut it = rest.split(':');
        (
            it.next().unwrap().parse::<usize>().unwrap(),
            it.next().unwrap().parse::<usize>().unwrap(),
        )
    };
    let line_of = |needle: &str| src.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let small = find("cache_max_size must be at least");
    assert_eq!(at(&small).0, line_of("cache_max_size"), "{small}");
    let unknown = find("unknown field `colour`");
    assert_eq!(at(&unknown), (line_of("colour"), 1), "{unknown}");
    let bad = find("unknown variant `explode`");
    assert_eq!(at(&bad).0, line_of("explode"), "{bad}");
    assert!(bad.contains("pass") && bad.contains("dead-letter"), "{bad}");
    let no_dl = find("filter `c` has on_error = \"dead-letter\" but no `dead_letter");
    assert_eq!(at(&no_dl).0, line_of("name = \"c\"") + 2, "{no_dl}");
    let missing_exp = find("dead_letter `nowhere`, which is not a defined exporter");
    assert_eq!(at(&missing_exp), (line_of("nowhere"), 15), "{missing_exp}");
    let missing_file = find("module file");
    assert!(
        missing_file.contains("missing.wasm") && missing_file.contains("filter `e`"),
        "{missing_file}"
    );
    assert_eq!(at(&missing_file), (line_of("missing.wasm"), 10));
    let timeout = find("timeout: invalid duration `soon`");
    assert_eq!(at(&timeout).0, line_of("\"soon\""));
    let ghost = find("route `r` runs filter `ghost`, which is not defined");
    assert_eq!(at(&ghost), (line_of("ghost"), 17), "{ghost}");
}

#[test]
fn dead_letter_needs_on_error_dead_letter_and_names_are_unique() {
    let dir = setup();
    let src = format!(
        r#"{EXPORTERS}
[[filters]]
name = "a"
module = "filters/a.wasm"
dead_letter = "dlq"

[[filters]]
name = "a"
module = "filters/a.wasm"

[wasm]
max_instances = 0
surprise = 1
"#
    );
    let e = parse(dir.path(), &src).unwrap_err();
    assert!(
        e.contains("set on_error = \"dead-letter\" or remove dead_letter"),
        "{e}"
    );
    assert!(e.contains("filter `a` is defined twice"), "{e}");
    assert!(e.contains("wasm: unknown field `surprise`"), "{e}");
    let src = format!("{EXPORTERS}\n[wasm]\nmax_instances = 0\n");
    let e = parse(dir.path(), &src).unwrap_err();
    let line = src.lines().position(|l| l.starts_with("max_instances")).unwrap() + 1;
    assert!(
        e.contains(&format!(":{line}:17: max_instances must be at least 1")),
        "{e}"
    );
}
