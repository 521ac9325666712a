//! Per-stage cost of the data path, in ns per event (figure 2 of the
//! pipeline benchmark; the WASM filter calls are in `benches/filter.rs`):
//! decoding a recorded watch line into the wire type, normalizing a core/v1
//! and an events.k8s.io/v1 Event (~1.1 KB each), matching a realistic
//! routing table, and serializing the normalized event into the record the
//! exporters share. The events come from the `generate` corpus (mixed
//! scenarios, both APIs), as in `dev_setup/bench.sh`.
//!
//! `cargo bench -p event-collector --bench pipeline`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use event_collector::config::Config;
use event_collector::event::json::write_event;
use event_collector::event::{Api, Event, NormalizeOptions, RawEvent, WatchType, normalize};
use event_collector::generate::{GenApi, GenOptions, Scenario, to_writer};
use event_collector::pipeline::to_record;
use event_collector::route::RouteTable;
use event_collector::source::replay::{Recorded, decode};

/// The collector's allocator (runtime/src/main.rs), so that the stages cost what they cost in the binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events per API in the sample corpus.
const PER_API: u64 = 500;

/// Several routes with selectors of every kind, then a default route.
const ROUTES: &str = r#"
cluster = "bench"

[[exporters]]
name = "warnings"
type = "stdout"
[[exporters]]
name = "archive"
type = "stdout"
[[exporters]]
name = "ops"
type = "stdout"

[[routes]]
name = "noise"
match = { reason = ["Pulled", "Created", "Started", "Scheduled"], type = "Normal", namespace = "glob:kube-*" }
exporters = []

[[routes]]
name = "system"
match = { namespace = ["kube-system", "kube-public", "monitoring"] }
exporters = ["ops"]

[[routes]]
name = "crashes"
match = { type = "Warning", reason = ["BackOff", "CrashLoopBackOff", "OOMKilling"], kind = "Pod" }
exporters = ["warnings"]
continue = true

[[routes]]
name = "scheduling"
match = { reason = "regex:Failed(Scheduling|Mount|AttachVolume)", reporting_controller = "glob:*scheduler*" }
exporters = ["warnings"]
continue = true

[[routes]]
name = "warnings"
match = { type = "Warning", namespace = { none_of = ["kube-system", "glob:test-*"] } }
exporters = ["warnings", "archive"]

[[routes]]
name = "rest"
default = true
exporters = ["archive"]
"#;

/// The sample corpus: (api, raw event, its recorded line).
fn corpus() -> Vec<(Api, RawEvent, Vec<u8>)> {
    let opts = GenOptions {
        api: GenApi::Both,
        count: Some(PER_API),
        scenario: Some(Scenario::Mixed),
        namespace: "shop".into(),
        ..GenOptions::default()
    };
    let mut out = Vec::new();
    to_writer(&mut out, &opts, 100_000).expect("writing to memory");
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| match decode(line) {
            Ok(Some(Recorded::Applied(api, raw))) => (api, *raw, line.to_vec()),
            other => panic!("the generator wrote an unexpected line: {other:?}"),
        })
        .collect()
}

/// The field set of `managedFields` for an object, as the API server writes
/// it: `f:<member>` for every member the request set, nested for objects.
fn field_set(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, v)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") && !v.is_null())
            .map(|(k, v)| (format!("f:{k}"), field_set(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        _ => serde_json::json!({}),
    }
}

/// A recorded line as a real API server serves it: with the `managedFields`
/// entry it adds to every object it stores (the generator's corpus leaves it
/// out, to stay near the ~1.1 KB of the issue's corpus).
fn with_managed_fields(line: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(line).expect("a recorded line is JSON");
    let o = &mut v["object"];
    let entry = serde_json::json!([{"manager": "kubelet", "operation": "Update", "apiVersion": o["apiVersion"],
        "time": o["metadata"]["creationTimestamp"], "fieldsType": "FieldsV1", "fieldsV1": field_set(o)}]);
    o["metadata"]["managedFields"] = entry;
    serde_json::to_vec(&v).expect("serializes")
}

fn opts() -> NormalizeOptions {
    NormalizeOptions {
        cluster: Arc::from("bench"),
        include_raw: false,
    }
}

fn normalized(api: Api, raw: &RawEvent) -> Event {
    normalize(api, raw.clone(), WatchType::Added, None, &opts()).expect("generated events normalize")
}

fn bench(c: &mut Criterion) {
    let corpus = corpus();
    let first = |api: Api| {
        corpus
            .iter()
            .find(|(a, ..)| *a == api)
            .expect("both APIs in the corpus")
    };
    let core = first(Api::CoreV1);
    let v1 = first(Api::EventsV1);
    let events: Vec<Event> = corpus.iter().map(|(api, raw, _)| normalized(*api, raw)).collect();
    let avg_line = corpus.iter().map(|(.., l)| l.len()).sum::<usize>() / corpus.len();
    let avg_json = events.iter().map(|e| to_record(e).json.len()).sum::<usize>() / events.len();
    eprintln!(
        "corpus: {} events, {avg_line} B per recorded line, {avg_json} B per normalized event; core/v1 line {} B, events.k8s.io/v1 line {} B",
        corpus.len(),
        core.2.len(),
        v1.2.len()
    );
    let config = Config::parse(ROUTES, Path::new("bench.toml")).expect("the bench route table is valid");
    let table = RouteTable::new(&config);

    let mut g = c.benchmark_group("pipeline stage, per event");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
        .throughput(Throughput::Elements(1));

    for (name, (api, raw, line)) in [("core/v1", core), ("events.k8s.io/v1", v1)] {
        g.bench_function(format!("decode a recorded line ({name})"), |b| {
            b.iter(|| black_box(decode(black_box(line))))
        });
        let served = with_managed_fields(line);
        g.bench_function(
            format!(
                "decode a line as the API server serves it, with managedFields ({name}, {} B)",
                served.len()
            ),
            |b| b.iter(|| black_box(decode(black_box(&served)))),
        );
        g.bench_function(format!("normalize ({name})"), |b| {
            b.iter_batched(
                || raw.clone(),
                |raw| black_box(normalize(*api, raw, WatchType::Added, None, &opts())),
                BatchSize::SmallInput,
            )
        });
        let ev = normalized(*api, raw);
        g.bench_function(format!("serialize to the exporters' record ({name})"), |b| {
            b.iter(|| black_box(to_record(black_box(&ev))))
        });
        // The event's JSON alone, by the collector's writer and by serde_json (pipeline optimisation 14).
        let mut buf = Vec::with_capacity(4096);
        g.bench_function(format!("serialize: event JSON by write_event ({name})"), |b| {
            b.iter(|| {
                buf.clear();
                write_event(&mut buf, black_box(&ev));
                black_box(buf.len())
            })
        });
        g.bench_function(format!("serialize: event JSON by serde_json ({name})"), |b| {
            b.iter(|| {
                buf.clear();
                let _ = serde_json::to_writer(&mut buf, black_box(&ev));
                black_box(buf.len())
            })
        });
    }

    // Route matching over the whole mixed corpus, so every route's selectors are exercised.
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function(format!("route: 6-route table, mixed corpus of {}", events.len()), |b| {
        let mut taken = Vec::new();
        b.iter(|| {
            let mut n = 0;
            for ev in &events {
                table.evaluate(black_box(ev), &mut taken);
                n += taken.len();
            }
            black_box(n)
        })
    });
    g.bench_function(
        format!(
            "decode + normalize + route + serialize, mixed corpus of {}",
            events.len()
        ),
        |b| {
            let mut taken = Vec::new();
            b.iter(|| {
                let mut bytes = 0;
                for (_, _, line) in &corpus {
                    let Ok(Some(Recorded::Applied(api, raw))) = decode(line) else {
                        continue;
                    };
                    let Ok(ev) = normalize(api, *raw, WatchType::Added, None, &opts()) else {
                        continue;
                    };
                    table.evaluate(&ev, &mut taken);
                    if !taken.is_empty() {
                        bytes += to_record(&ev).json.len();
                    }
                }
                black_box(bytes)
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
