//! The shared conformance suite on the collector's own wasmtime host: every
//! example filter in `filters/` (six languages, components and core modules)
//! and every contract module in `filters/conformance/contract/` runs its
//! `*.test.jsonl` vectors through `event-collector filter test`'s engine, and
//! every vector must pass.
//!
//! The modules are built by `dev_setup/build-filters.sh` (the test command runs
//! it first and sets `EC_REQUIRE_FILTERS=1`, so a missing module fails there).
//! Run alone without the toolchains, missing modules are reported and skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use event_collector::filter::tools::{TestOptions, filter_test};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn required() -> bool {
    std::env::var("EC_REQUIRE_FILTERS").is_ok_and(|v| v == "1")
}

/// Runs `vectors` through `module` (with `config`); returns the failures as text.
fn run(module: &Path, config: Option<PathBuf>, vectors: &Path) -> Result<usize, String> {
    let opts = TestOptions {
        module: module.to_path_buf(),
        config,
        input: vectors.to_path_buf(),
        repeat: 1,
        cluster: "conformance".into(),
        // The vectors check verdicts, not speed: on a loaded machine a slow
        // module's first call (Python's is ~9 ms quiet) can pass the default 10 ms.
        timeout: Some(Duration::from_secs(2)),
    };
    let mut out = Vec::new();
    let result = filter_test(&opts, &mut out);
    let text = String::from_utf8_lossy(&out);
    // The per-line report says which vector failed and why.
    let s = result.map_err(|e| format!("{}: {e:#}\n{text}", module.display()))?;
    if s.vectors_failed > 0 || s.vectors_passed == 0 {
        return Err(format!(
            "{}: {} passed, {} failed\n{text}",
            module.display(),
            s.vectors_passed,
            s.vectors_failed
        ));
    }
    Ok(s.vectors_passed)
}

/// `(name, module, vectors, config)` for every folder of `dir` with a `build.sh`.
fn examples(dir: &Path) -> Vec<(String, PathBuf, PathBuf, Option<PathBuf>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("filters/") {
        let path = entry.expect("dir entry").path();
        if !path.join("build.sh").is_file() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let config = path.join(format!("{name}.config.json"));
        out.push((
            name.clone(),
            path.join(format!("{name}.wasm")),
            path.join(format!("{name}.test.jsonl")),
            config.is_file().then_some(config),
        ));
    }
    out.sort();
    out
}

#[test]
fn every_example_filter_passes_its_vectors_on_wasmtime() {
    let all = examples(&repo().join("filters"));
    assert!(
        all.len() >= 7,
        "expected the seven example filters, found {}",
        all.len()
    );
    let (mut failures, mut missing, mut passed) = (Vec::new(), Vec::new(), 0);
    for (name, module, vectors, config) in &all {
        if !module.is_file() {
            missing.push(name.clone());
            continue;
        }
        match run(module, config.clone(), vectors) {
            Ok(n) => {
                eprintln!("{name}: {n} vectors passed");
                passed += n;
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if !missing.is_empty() {
        let msg = format!("not built (run dev_setup/build-filters.sh): {}", missing.join(", "));
        assert!(!required(), "{msg}");
        eprintln!("skipped: {msg}");
    }
    eprintln!("{passed} vectors passed");
}

#[test]
fn every_contract_module_passes_its_vectors_on_wasmtime() {
    let dir = repo().join("filters/conformance/contract");
    let mut wats: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("contract dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wat"))
        .collect();
    wats.sort();
    assert!(wats.len() >= 7, "{wats:?}");
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for wat in &wats {
        let stem = wat.file_stem().unwrap().to_string_lossy().to_string();
        let module = tmp.path().join(format!("{stem}.wasm"));
        std::fs::write(
            &module,
            wat::parse_file(wat).unwrap_or_else(|e| panic!("{}: {e}", wat.display())),
        )
        .unwrap();
        if let Err(e) = run(&module, None, &dir.join(format!("{stem}.test.jsonl"))) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
