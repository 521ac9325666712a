//! Per-call cost of the WASM filter host on a ~1 KB event:
//! a Rust component (no-op, a real enricher answering `replace`, and the
//! same changes as an `edit` verdict) and core modules, a reused
//! instance vs a fresh instance per call, epoch interruption on vs off.
//!
//! A second group calls each example filter of `filters/` (one per language,
//! with its own `<name>.config.json`) that `dev_setup/build-filters.sh` built.
//!
//! `cargo bench -p event-collector --bench filter` (builds the test guest
//! component first, like the tests do).

#[path = "../tests/wasm/common.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use event_collector::config::{FilterConfig, WasmConfig};
use event_collector::filter::{FilterHost, HostOptions};
use event_collector::metrics::Metrics;

fn filters(dir: &std::path::Path) -> Vec<FilterConfig> {
    let guest = guest_copy(dir, "guest.wasm");
    let comp = |name: &str, config: &str, recycle: u64| {
        let mut f = FilterConfig::new(name, &guest);
        f.watch = false;
        f.config_json = config.into();
        f.recycle_after_calls = recycle;
        f
    };
    let core = |name: &str, bytes: Vec<u8>, recycle: u64| {
        let mut f = filter_file(dir, name, &bytes);
        f.recycle_after_calls = recycle;
        // The test modules start at 256 KiB: keep them below the memory recycle threshold.
        f.recycle_memory_above = Some(1 << 20);
        f
    };
    vec![
        comp("rust-noop", r#"{"mode":"keep"}"#, 0),
        comp("rust-enrich", r#"{"mode":"enrich"}"#, 0),
        comp("rust-edit", r#"{"mode":"edit"}"#, 0),
        comp("rust-noop-fresh", r#"{"mode":"keep"}"#, 1),
        core("core-noop", core_keep(), 0),
        core("core-replace", core_tagger("bench"), 0),
        core("core-noop-fresh", core_keep(), 1),
    ]
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let fs = filters(dir.path());
    let wasm_on = WasmConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..WasmConfig::default()
    };
    let wasm_off = WasmConfig {
        epoch_interruption: false,
        ..wasm_on.clone()
    };
    let opts = HostOptions {
        watch: false,
        ..HostOptions::default()
    };
    let on = FilterHost::with_options(&fs, &wasm_on, Arc::new(Metrics::new()), opts.clone()).unwrap();
    let off = FilterHost::with_options(&fs, &wasm_off, Arc::new(Metrics::new()), opts).unwrap();
    let mut ev = event("bench-uid", "BackOff");
    let json = serde_json::to_vec(&ev).unwrap();
    eprintln!("event JSON: {} bytes", json.len());

    let mut g = c.benchmark_group("filter call, 1 KB event");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);

    g.bench_function("host only: serialize the event (what a call without JSON adds)", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&ev)).unwrap()))
    });
    let replaced = {
        let mut v = serde_json::to_value(&ev).unwrap();
        v["extra"] = serde_json::json!({"team": "money"});
        v.to_string()
    };
    g.bench_function("host only: validate a replacement (parse 1 KB into Event)", |b| {
        b.iter(|| black_box(serde_json::from_str::<event_collector::event::Event>(black_box(&replaced)).unwrap()))
    });
    for (host, epoch) in [(&on, "epoch on"), (&off, "epoch off")] {
        let mut w = host.worker();
        for name in [
            "rust-noop",
            "rust-enrich",
            "rust-edit",
            "core-noop",
            "core-replace",
            "rust-noop-fresh",
            "core-noop-fresh",
        ] {
            if epoch == "epoch off" && name.ends_with("fresh") {
                continue;
            }
            let id = host.id(name).unwrap();
            // Warm: instantiate before measuring.
            black_box(w.call(id, &mut ev, Some(&json)));
            g.bench_function(format!("{name} ({epoch})"), |b| {
                b.iter(|| black_box(w.call(id, black_box(&mut ev), Some(black_box(&json)))))
            });
        }
    }
    // A whole chain (the pipeline's entry point), event moved in and out.
    let mut w = on.worker();
    let chain = on.chain(&["rust-noop", "core-noop"]).unwrap();
    g.bench_function("run_chain [rust-noop, core-noop] (epoch on)", |b| {
        b.iter_batched(
            || ev.clone(),
            |e| black_box(w.run_chain(&chain, e, Some(&json))),
            BatchSize::SmallInput,
        )
    });
    // Replace vs edit where it counts: the chain applies the edits and the
    // event comes out changed either way.
    for name in ["rust-enrich", "rust-edit"] {
        let chain = on.chain(&[name]).unwrap();
        g.bench_function(format!("run_chain [{name}] (epoch on)"), |b| {
            b.iter_batched(
                || ev.clone(),
                |e| black_box(w.run_chain(&chain, e, Some(&json))),
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("run_chain [] (baseline)", |b| {
        b.iter_batched(
            || ev.clone(),
            |e| black_box(w.run_chain(&[], e, Some(&json))),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Every built example filter in `filters/`, configured with its `<name>.config.json`.
fn examples() -> Vec<FilterConfig> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../filters");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(&root) else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let module = entry.path().join(format!("{name}.wasm"));
        if !module.is_file() {
            continue;
        }
        let mut f = FilterConfig::new(&name, &module);
        f.watch = false;
        f.breaker_threshold = 0;
        f.timeout = Duration::from_secs(1);
        if let Ok(c) = std::fs::read_to_string(entry.path().join(format!("{name}.config.json"))) {
            f.config_json = c;
        }
        out.push(f);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn bench_examples(c: &mut Criterion) {
    let fs = examples();
    if fs.is_empty() {
        eprintln!("no example filter is built (dev_setup/build-filters.sh): skipping the per-language group");
        return;
    }
    let opts = HostOptions {
        watch: false,
        ..HostOptions::default()
    };
    let host = FilterHost::with_options(&fs, &WasmConfig::default(), Arc::new(Metrics::new()), opts).unwrap();
    let mut ev = event("bench-uid", "BackOff");
    let json = serde_json::to_vec(&ev).unwrap();
    let mut g = c.benchmark_group("example filters, 1 KB event (epoch on)");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    let mut w = host.worker();
    for f in &fs {
        let id = host.id(&f.name).unwrap();
        black_box(w.call(id, &mut ev, Some(&json)));
        g.bench_function(f.name.as_str(), |b| {
            b.iter(|| black_box(w.call(id, black_box(&mut ev), Some(black_box(&json)))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_examples);
criterion_main!(benches);
