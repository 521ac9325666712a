use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use flate2::read::GzDecoder;
use tempfile::TempDir;

use super::naming::{self, NameKey, Variant};
use super::writer::Fault;
use super::*;
use crate::{ErrorKind, RecordFields};

/// Record `i`: a fixed-length JSON object (LINE bytes with its newline).
fn rec(i: usize) -> Arc<Record> {
    Arc::new(Record::new(
        RecordFields::default(),
        format!(r#"{{"i":{i:06},"msg":"event number {i:06}"}}"#),
    ))
}

const LINE: u64 = 41;

fn batch(range: std::ops::Range<usize>) -> Vec<Arc<Record>> {
    range.map(rec).collect()
}

fn lines(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{}\n", String::from_utf8_lossy(&rec(i).json)))
        .collect()
}

/// A config in `dir/out` with background behaviour that tests do not want
/// (time rotation) turned off.
fn config(tmp: &TempDir) -> VolumeConfig {
    let mut c = VolumeConfig::new(tmp.path().join("out"));
    c.rotate_interval = Duration::ZERO;
    c
}

/// File names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Rotated files of prefix `events`, sorted by name.
fn rotated(dir: &Path) -> Vec<PathBuf> {
    listing(dir)
        .into_iter()
        .filter(|n| naming::parse("events", n).is_some())
        .map(|n| dir.join(n))
        .collect()
}

/// A file's content, gunzipped if it is a `.gz`.
fn content(path: &Path) -> String {
    let raw = fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        GzDecoder::new(&raw[..]).read_to_string(&mut s).unwrap();
        s
    } else {
        String::from_utf8(raw).unwrap()
    }
}

/// Everything written, in order: rotated files by name, then the active file.
fn everything(dir: &Path) -> String {
    let mut s: String = rotated(dir).iter().map(|p| content(p)).collect();
    let active = dir.join("events.jsonl");
    if active.exists() {
        s.push_str(&content(&active));
    }
    s
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn not_ready_message(e: &VolumeExporter) -> String {
    match e.health() {
        Health::NotReady(m) => m,
        Health::Ready => panic!("expected NotReady"),
    }
}

/// Exports once the previous owner of the files (being dropped) has let go.
async fn export_when_unlocked(e: &VolumeExporter, b: &Batch) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(err) = e.export(b).await {
        assert_eq!(err.reason, "locked", "{}", err.message);
        assert!(Instant::now() < deadline, "the lock was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn key(ts: &str, seq: u64) -> NameKey {
    NameKey {
        ts: ts.to_string(),
        seq,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn set_age(path: &Path, age: Duration) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn record_lines_are_exactly_one_line() {
    assert_eq!(rec(7).json.len() as u64 + 1, LINE);
    let mut buf = Vec::new();
    append_json_line(&mut buf, b"{\"a\":\n1}");
    append_json_line(&mut buf, b"{}");
    assert_eq!(buf, b"{\"a\": 1}\n{}\n");
}

#[tokio::test]
async fn writes_lines_exactly_and_in_order() {
    let tmp = TempDir::new().unwrap();
    let e = config(&tmp).build("vol").unwrap();
    assert_eq!(e.name(), "vol");
    e.export(&batch(0..3)).await.unwrap();
    e.export(&[]).await.unwrap();
    e.export(&batch(3..4)).await.unwrap();
    e.export(&batch(4..104)).await.unwrap();
    let dir = tmp.path().join("out");
    assert_eq!(fs::read_to_string(dir.join("events.jsonl")).unwrap(), lines(0..104));
    assert_eq!(listing(&dir), ["events.jsonl", "events.lock"]);
    assert_eq!(e.active_path(), dir.join("events.jsonl"));
    let s = e.stats();
    assert_eq!((s.batches, s.records, s.bytes), (3, 104, 104 * LINE));
    assert_eq!((s.write_errors, s.rotations), (0, 0));
    assert_eq!(e.health(), Health::Ready);
    e.flush().await.unwrap();
    assert!(e.stats().fsyncs >= 1);
}

#[tokio::test]
async fn size_rotation_splits_between_batches() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    // 2 batches of 2 lines fit, a third does not.
    c.max_file_size = 5 * LINE;
    let e = c.build("vol").unwrap();
    for b in 0..10 {
        e.export(&batch(2 * b..2 * b + 2)).await.unwrap();
    }
    let dir = tmp.path().join("out");
    let files = rotated(&dir);
    assert_eq!(files.len(), 4, "{:?}", listing(&dir));
    for (n, f) in files.iter().enumerate() {
        assert_eq!(content(f), lines(4 * n..4 * n + 4), "{}", f.display());
    }
    assert_eq!(content(&dir.join("events.jsonl")), lines(16..20));
    assert_eq!(everything(&dir), lines(0..20));
    assert_eq!(e.stats().rotations, 4);
}

#[tokio::test]
async fn an_oversized_batch_gets_a_file_of_its_own() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.max_file_size = LINE;
    let e = c.build("vol").unwrap();
    e.export(&batch(0..3)).await.unwrap();
    e.export(&batch(3..4)).await.unwrap();
    e.export(&batch(4..5)).await.unwrap();
    let dir = tmp.path().join("out");
    let files = rotated(&dir);
    assert_eq!(files.len(), 2);
    assert_eq!(content(&files[0]), lines(0..3));
    assert_eq!(content(&files[1]), lines(3..4));
    assert_eq!(content(&dir.join("events.jsonl")), lines(4..5));
}

#[tokio::test]
async fn many_rotations_in_a_millisecond_never_collide_and_sort_in_order() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.max_file_size = 1;
    c.fsync = FsyncPolicy::Never;
    let e = c.build("vol").unwrap();
    for i in 0..40 {
        e.export(&batch(i..i + 1)).await.unwrap();
    }
    let dir = tmp.path().join("out");
    assert_eq!(rotated(&dir).len(), 39);
    assert_eq!(everything(&dir), lines(0..40));
}

#[tokio::test]
async fn names_sort_after_existing_files_across_restarts() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    // A file from the future, as after a clock step back.
    let future = key("29991231T235959.999Z", 7);
    fs::write(
        dir.join(naming::file_name("events", &future, Variant::Plain)),
        lines(0..1),
    )
    .unwrap();
    let mut c = config(&tmp);
    c.max_file_size = 1;
    {
        let e = c.build("vol").unwrap();
        for i in 1..4 {
            e.export(&batch(i..i + 1)).await.unwrap();
        }
    }
    // Restart.
    let e = c.build("vol").unwrap();
    export_when_unlocked(&e, &batch(4..5)).await;
    for i in 5..6 {
        e.export(&batch(i..i + 1)).await.unwrap();
    }
    let names: Vec<String> = rotated(&dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let seqs: Vec<NameKey> = names.iter().map(|n| naming::parse("events", n).unwrap().0).collect();
    assert_eq!(
        seqs,
        (7..12).map(|s| key("29991231T235959.999Z", s)).collect::<Vec<_>>()
    );
    assert_eq!(everything(&dir), lines(0..6));
}

#[tokio::test]
async fn time_rotation_on_write_and_when_idle() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.rotate_interval = Duration::from_millis(200);
    c.fsync = FsyncPolicy::Never;
    let e = c.build("vol").unwrap();
    let dir = tmp.path().join("out");
    e.export(&batch(0..2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    e.export(&batch(2..4)).await.unwrap();
    // Rotated by the background thread or by this write, whichever came first.
    let files = rotated(&dir);
    assert!(!files.is_empty());
    assert_eq!(content(&files[0]), lines(0..2));
    // No more writes: the background thread rotates the idle file on time.
    wait_until("an idle rotation", || rotated(&dir).len() == 2);
    let files = rotated(&dir);
    assert_eq!(content(&files[1]), lines(2..4));
    assert_eq!(content(&dir.join("events.jsonl")), "");
    // An empty active file is never rotated.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rotated(&dir).len(), 2);
    assert_eq!(e.stats().rotations, 2);
    assert_eq!(everything(&dir), lines(0..4));
}

#[tokio::test]
async fn rotated_files_are_gzipped() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.max_file_size = 5 * LINE;
    c.compress = true;
    let e = c.build("vol").unwrap();
    for b in 0..10 {
        e.export(&batch(2 * b..2 * b + 2)).await.unwrap();
    }
    e.settle();
    let dir = tmp.path().join("out");
    let files = rotated(&dir);
    assert_eq!(files.len(), 4);
    for (n, f) in files.iter().enumerate() {
        assert!(f.to_string_lossy().ends_with(".jsonl.gz"), "{}", f.display());
        assert_eq!(content(f), lines(4 * n..4 * n + 4));
    }
    assert_eq!(
        listing(&dir).len(),
        6,
        "4 .gz, the active file and the lock: {:?}",
        listing(&dir)
    );
    assert_eq!(everything(&dir), lines(0..20));
    let s = e.stats();
    assert_eq!((s.files_compressed, s.compression_errors), (4, 0));
}

#[tokio::test]
async fn startup_finishes_or_cleans_interrupted_compressions() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    let name = |k: &NameKey, v| dir.join(naming::file_name("events", k, v));
    let (k1, k2, k3) = (
        key("20240101T000000.000Z", 0),
        key("20240101T000001.000Z", 0),
        key("20240101T000002.000Z", 0),
    );
    // k1: crash mid-compression: plain + partial tmp.
    fs::write(name(&k1, Variant::Plain), lines(0..2)).unwrap();
    fs::write(name(&k1, Variant::GzTmp), b"\x1f\x8b partial").unwrap();
    set_age(&name(&k1, Variant::Plain), Duration::from_secs(7200));
    // k2: crash after the rename, before deleting the plain file.
    fs::write(name(&k2, Variant::Plain), lines(2..4)).unwrap();
    fs::write(name(&k2, Variant::Gz), gzip(lines(2..4).as_bytes())).unwrap();
    // k3: a stray tmp.
    fs::write(name(&k3, Variant::GzTmp), b"junk").unwrap();
    fs::write(dir.join("notes.txt"), b"keep me").unwrap();
    fs::write(dir.join("other-20240101T000000.000Z-000.jsonl.gz.tmp"), b"not ours").unwrap();

    let mut c = config(&tmp);
    c.compress = true;
    let e = c.build("vol").unwrap();
    e.settle();
    assert_eq!(
        listing(&dir),
        [
            "events-20240101T000000.000Z-000.jsonl.gz",
            "events-20240101T000001.000Z-000.jsonl.gz",
            "events.jsonl",
            "events.lock",
            "notes.txt",
            "other-20240101T000000.000Z-000.jsonl.gz.tmp",
        ]
    );
    assert_eq!(content(&name(&k1, Variant::Gz)), lines(0..2));
    assert_eq!(content(&name(&k2, Variant::Gz)), lines(2..4));
    // The .gz kept the age of the file it replaced.
    let age = SystemTime::now()
        .duration_since(fs::metadata(name(&k1, Variant::Gz)).unwrap().modified().unwrap())
        .unwrap();
    assert!(
        age > Duration::from_secs(7100) && age < Duration::from_secs(7300),
        "{age:?}"
    );
    assert_eq!(e.stats().files_compressed, 1);
}

#[tokio::test]
async fn startup_cleans_leftovers_without_compression_too() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    let name = |k: &NameKey, v| dir.join(naming::file_name("events", k, v));
    let (k1, k2) = (key("20240101T000000.000Z", 0), key("20240101T000001.000Z", 0));
    fs::write(name(&k1, Variant::Plain), lines(0..2)).unwrap();
    fs::write(name(&k1, Variant::GzTmp), b"partial").unwrap();
    fs::write(name(&k2, Variant::Plain), lines(2..4)).unwrap();
    fs::write(name(&k2, Variant::Gz), gzip(lines(2..4).as_bytes())).unwrap();
    let e = config(&tmp).build("vol").unwrap();
    e.settle();
    assert_eq!(
        listing(&dir),
        [
            "events-20240101T000000.000Z-000.jsonl",
            "events-20240101T000001.000Z-000.jsonl.gz",
            "events.jsonl",
            "events.lock",
        ]
    );
    assert_eq!(everything(&dir), lines(0..4));
}

#[tokio::test]
async fn retention_by_count_keeps_the_newest() {
    for compress in [false, true] {
        let tmp = TempDir::new().unwrap();
        let mut c = config(&tmp);
        c.max_file_size = 1;
        c.max_files = Some(2);
        c.compress = compress;
        let e = c.build("vol").unwrap();
        for i in 0..6 {
            e.export(&batch(i..i + 1)).await.unwrap();
        }
        e.settle();
        let dir = tmp.path().join("out");
        let files = rotated(&dir);
        assert_eq!(files.len(), 2, "{:?}", listing(&dir));
        assert_eq!(content(&files[0]), lines(3..4));
        assert_eq!(content(&files[1]), lines(4..5));
        assert_eq!(content(&dir.join("events.jsonl")), lines(5..6));
        assert_eq!(e.stats().files_deleted, 3);
        let gz = files.iter().filter(|f| f.to_string_lossy().ends_with(".gz")).count();
        assert_eq!(gz, if compress { 2 } else { 0 });
    }
}

#[tokio::test]
async fn retention_by_age_deletes_old_rotated_files_only() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    let name = |k: &NameKey, v| dir.join(naming::file_name("events", k, v));
    let old1 = name(&key("20240101T000000.000Z", 0), Variant::Gz);
    let old2 = name(&key("20240101T000001.000Z", 0), Variant::Plain);
    let new1 = name(&key("20240101T000002.000Z", 0), Variant::Gz);
    let new2 = name(&key("20240101T000003.000Z", 0), Variant::Plain);
    fs::write(&old1, gzip(b"{}\n")).unwrap();
    fs::write(&old2, "{}\n").unwrap();
    fs::write(&new1, gzip(b"{}\n")).unwrap();
    fs::write(&new2, "{}\n").unwrap();
    let active = dir.join("events.jsonl");
    fs::write(&active, lines(0..1)).unwrap();
    set_age(&old1, Duration::from_secs(3 * 3600));
    set_age(&old2, Duration::from_secs(2 * 3600));
    set_age(&new1, Duration::from_secs(600));
    set_age(&active, Duration::from_secs(5 * 3600));

    let mut c = config(&tmp);
    c.max_age = Some(Duration::from_secs(3600));
    let e = c.build("vol").unwrap();
    e.settle();
    assert_eq!(rotated(&dir), [new1.clone(), new2.clone()]);
    assert_eq!(content(&active), lines(0..1), "the active file is never deleted");
    assert_eq!(e.stats().files_deleted, 2);
    // Ages are checked again on every pass.
    set_age(&new1, Duration::from_secs(3601));
    e.settle();
    assert_eq!(rotated(&dir), [new2]);
    e.export(&batch(1..2)).await.unwrap();
    assert_eq!(content(&active), lines(0..2));
}

#[tokio::test]
async fn retention_by_age_runs_periodically() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    let f = dir.join(naming::file_name(
        "events",
        &key("20240101T000000.000Z", 0),
        Variant::Plain,
    ));
    fs::write(&f, "{}\n").unwrap();
    let mut c = config(&tmp);
    // Checked every 50 ms (max_age / 4, at least 50 ms).
    c.max_age = Some(Duration::from_millis(200));
    let e = c.build("vol").unwrap();
    e.export(&batch(0..1)).await.unwrap();
    // Nothing triggers a pass: only the timer can delete the file.
    wait_until("age retention", || !f.exists());
    assert_eq!(e.stats().files_deleted, 1);
}

#[tokio::test]
async fn fsync_always_syncs_every_batch() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.fsync = FsyncPolicy::Always;
    let e = c.build("vol").unwrap();
    for b in 0..3 {
        e.export(&batch(b * 10..b * 10 + 10)).await.unwrap();
    }
    assert_eq!(e.stats().fsyncs, 3);
    assert_eq!(content(&tmp.path().join("out/events.jsonl")), lines(0..30));
    e.flush().await.unwrap();
    assert_eq!(e.stats().fsyncs, 4);
}

#[tokio::test]
async fn fsync_interval_syncs_in_the_background() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.fsync = FsyncPolicy::Interval(Duration::from_millis(50));
    let e = c.build("vol").unwrap();
    e.export(&batch(0..10)).await.unwrap();
    wait_until("a background fsync", || e.stats().fsyncs >= 1);
    assert!(!e.inner.unsynced.load(Ordering::Acquire));
    // Nothing new: no more fsyncs.
    let n = e.stats().fsyncs;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.stats().fsyncs, n);
}

#[tokio::test]
async fn fsync_never_does_not_sync() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.fsync = FsyncPolicy::Never;
    c.max_file_size = 3 * LINE;
    let e = c.build("vol").unwrap();
    for b in 0..4 {
        e.export(&batch(2 * b..2 * b + 2)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(e.stats().fsyncs, 0);
    assert_eq!(e.stats().rotations, 3);
    // A flush fsyncs everything: the active file and the 3 rotated files.
    e.flush().await.unwrap();
    assert_eq!(e.stats().fsyncs, 4);
    e.flush().await.unwrap();
    assert_eq!(e.stats().fsyncs, 5);
}

#[tokio::test]
async fn torn_tail_is_repaired_at_startup() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    let active = dir.join("events.jsonl");
    fs::write(&active, format!("{}{{\"i\":99", lines(0..2))).unwrap();
    let e = config(&tmp).build("vol").unwrap();
    e.settle();
    // Repaired before any batch.
    assert_eq!(content(&active), lines(0..2));
    assert_eq!(e.stats().torn_bytes_truncated, 7);
    e.export(&batch(2..3)).await.unwrap();
    assert_eq!(content(&active), lines(0..3));
}

#[tokio::test]
async fn torn_tail_without_any_newline_empties_the_file() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    let active = dir.join("events.jsonl");
    // Longer than one read chunk, without a newline.
    fs::write(&active, vec![b'x'; 200_000]).unwrap();
    let e = config(&tmp).build("vol").unwrap();
    e.export(&batch(0..2)).await.unwrap();
    assert_eq!(content(&active), lines(0..2));
    assert_eq!(e.stats().torn_bytes_truncated, 200_000);
}

#[tokio::test]
async fn failure_when_the_directory_is_a_file_then_recovery() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    let e = config(&tmp).build("vol").unwrap();
    e.export(&batch(0..2)).await.unwrap();
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, "not a directory").unwrap();

    let err = e.export(&batch(2..4)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.reason, "io");
    assert!(err.message.contains(&*dir.to_string_lossy()), "{}", err.message);
    assert!(err.message.contains("os error"), "{}", err.message);
    assert_eq!(not_ready_message(&e), err.message);
    // Retries keep failing the same way, without side effects.
    assert_eq!(e.export(&batch(2..4)).await.unwrap_err().reason, "io");
    assert_eq!(fs::read_to_string(&dir).unwrap(), "not a directory");
    assert_eq!(e.stats().write_errors, 2);

    fs::remove_file(&dir).unwrap();
    e.export(&batch(2..4)).await.unwrap();
    assert_eq!(e.health(), Health::Ready);
    assert_eq!(content(&dir.join("events.jsonl")), lines(2..4));
    assert!(dir.join("events.lock").exists());
}

#[tokio::test]
async fn failure_when_the_active_path_is_a_directory_then_recovery() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    let active = dir.join("events.jsonl");
    let e = config(&tmp).build("vol").unwrap();
    e.export(&batch(0..2)).await.unwrap();
    fs::remove_file(&active).unwrap();
    fs::create_dir(&active).unwrap();

    let err = e.export(&batch(2..4)).await.unwrap_err();
    assert_eq!((err.kind, err.reason), (ErrorKind::Transient, "io"));
    assert!(err.message.contains(&*active.to_string_lossy()), "{}", err.message);
    assert!(!e.health().is_ready());

    fs::remove_dir(&active).unwrap();
    e.export(&batch(2..4)).await.unwrap();
    e.export(&batch(4..5)).await.unwrap();
    assert!(e.health().is_ready());
    assert_eq!(content(&active), lines(2..5));
}

#[tokio::test]
async fn active_file_that_is_not_a_regular_file_is_refused() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/null", dir.join("events.jsonl")).unwrap();
    let e = config(&tmp).build("vol").unwrap();
    let err = e.export(&batch(0..1)).await.unwrap_err();
    assert_eq!(err.reason, "io");
    assert!(err.message.contains("not a regular file"), "{}", err.message);
}

#[tokio::test]
async fn removed_directory_is_recreated() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("out");
    let e = config(&tmp).build("vol").unwrap();
    e.export(&batch(0..2)).await.unwrap();
    fs::remove_dir_all(&dir).unwrap();
    e.export(&batch(2..4)).await.unwrap();
    assert_eq!(content(&dir.join("events.jsonl")), lines(2..4));
    // The lock was taken again on the new directory.
    let other = config(&tmp).build("other").unwrap();
    assert_eq!(other.export(&batch(0..1)).await.unwrap_err().reason, "locked");
}

#[tokio::test]
async fn a_failed_partial_write_is_rolled_back() {
    let tmp = TempDir::new().unwrap();
    let active = tmp.path().join("out/events.jsonl");
    let e = config(&tmp).build("vol").unwrap();
    e.export(&batch(0..3)).await.unwrap();
    e.inject(Fault {
        written: 50,
        error: io::ErrorKind::StorageFull,
        fail_truncate: false,
    });
    let err = e.export(&batch(3..6)).await.unwrap_err();
    assert_eq!((err.kind, err.reason), (ErrorKind::Transient, "disk_full"));
    assert!(err.message.contains(&*active.to_string_lossy()), "{}", err.message);
    assert_eq!(content(&active), lines(0..3), "no partial line stays");
    assert_eq!(not_ready_message(&e), err.message);

    e.export(&batch(3..6)).await.unwrap();
    assert_eq!(content(&active), lines(0..6));
    assert!(e.health().is_ready());
    let s = e.stats();
    assert_eq!((s.batches, s.records, s.write_errors), (2, 6, 1));
}

#[tokio::test]
async fn a_batch_bigger_than_a_write_chunk_is_written_whole_and_in_order() {
    let tmp = TempDir::new().unwrap();
    let active = tmp.path().join("out/events.jsonl");
    let e = config(&tmp).build("vol").unwrap();
    // 20,000 lines of 41 bytes: four chunks of at most 256 KiB.
    e.export(&batch(0..20_000)).await.unwrap();
    e.export(&batch(20_000..20_003)).await.unwrap();
    assert_eq!(content(&active), lines(0..20_003));
    let s = e.stats();
    assert_eq!((s.batches, s.records, s.bytes), (2, 20_003, 20_003 * LINE));
}

#[tokio::test]
async fn a_failure_in_a_later_chunk_rolls_back_the_whole_batch() {
    let tmp = TempDir::new().unwrap();
    let active = tmp.path().join("out/events.jsonl");
    let e = config(&tmp).build("vol").unwrap();
    e.export(&batch(0..3)).await.unwrap();
    // The first chunk and part of the second reach the file, then the disk is full.
    e.inject(Fault {
        written: 400_000,
        error: io::ErrorKind::StorageFull,
        fail_truncate: false,
    });
    assert_eq!(e.export(&batch(3..20_003)).await.unwrap_err().reason, "disk_full");
    assert_eq!(content(&active), lines(0..3), "nothing of the failed batch stays");
    e.export(&batch(3..20_003)).await.unwrap();
    assert_eq!(content(&active), lines(0..20_003));
}

#[tokio::test]
async fn a_failed_rollback_is_finished_before_the_next_write() {
    let tmp = TempDir::new().unwrap();
    let active = tmp.path().join("out/events.jsonl");
    let e = config(&tmp).build("vol").unwrap();
    e.export(&batch(0..3)).await.unwrap();
    // One complete line of the batch reaches the file, and it cannot be
    // truncated away right now: a tail repair alone would keep that line
    // and the retry would duplicate it.
    e.inject(Fault {
        written: LINE as usize,
        error: io::ErrorKind::StorageFull,
        fail_truncate: true,
    });
    assert_eq!(e.export(&batch(3..6)).await.unwrap_err().reason, "disk_full");
    assert_eq!(content(&active), lines(0..4), "the failed truncation left the line");
    e.export(&batch(3..6)).await.unwrap();
    assert_eq!(content(&active), lines(0..6));
}

/// A real full disk: a 256 KiB tmpfs. Needs the right to mount (root with
/// CAP_SYS_ADMIN, as in CI); elsewhere the test says so and checks nothing.
#[tokio::test]
async fn real_disk_full_on_a_small_tmpfs() {
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let tmp = TempDir::new().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("real_disk_full_on_a_small_tmpfs: cannot mount a tmpfs here; skipped");
        return;
    }
    let _guard = Mount(mnt.clone());
    let mut c = VolumeConfig::new(mnt.join("events"));
    c.rotate_interval = Duration::ZERO;
    let e = c.build("vol").unwrap();
    let active = mnt.join("events/events.jsonl");
    // 1000 lines (41 kB) per batch: the 7th cannot fit.
    let mut acked = 0;
    let err = loop {
        match e.export(&batch(acked..acked + 1000)).await {
            Ok(()) => acked += 1000,
            Err(err) => break err,
        }
        assert!(acked < 20_000, "the tmpfs never filled up");
    };
    assert!(acked >= 1000);
    assert_eq!((err.kind, err.reason), (ErrorKind::Transient, "disk_full"));
    assert!(err.message.contains(&*active.to_string_lossy()), "{}", err.message);
    assert!(err.message.contains("os error 28"), "{}", err.message);
    assert!(!e.health().is_ready());
    assert_eq!(content(&active), lines(0..acked), "exactly the acknowledged batches");
    let status = std::process::Command::new("mount")
        .args(["-o", "remount,size=2m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    e.export(&batch(acked..acked + 1000)).await.unwrap();
    assert!(e.health().is_ready());
    assert_eq!(content(&active), lines(0..acked + 1000));
}

#[test]
fn errors_are_classified() {
    let mut full = fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let enospc = full.write_all(b"x").and_then(|()| full.flush()).unwrap_err();
    assert_eq!(classify(&enospc), "disk_full");
    assert_eq!(classify(&io::Error::from_raw_os_error(122)), "disk_full"); // EDQUOT
    assert_eq!(classify(&io::Error::from_raw_os_error(13)), "permission_denied"); // EACCES
    assert_eq!(classify(&io::Error::from_raw_os_error(1)), "permission_denied"); // EPERM
    assert_eq!(classify(&io::Error::from_raw_os_error(30)), "permission_denied"); // EROFS
    assert_eq!(classify(&io::Error::from_raw_os_error(20)), "io"); // ENOTDIR
    assert_eq!(classify(&io::Error::from_raw_os_error(5)), "io"); // EIO
}

#[tokio::test]
async fn a_second_writer_on_the_same_files_is_locked_out() {
    let tmp = TempDir::new().unwrap();
    let first = config(&tmp).build("first").unwrap();
    first.export(&batch(0..2)).await.unwrap();
    let second = config(&tmp).build("second").unwrap();
    let err = second.export(&batch(2..4)).await.unwrap_err();
    assert_eq!((err.kind, err.reason), (ErrorKind::Transient, "locked"));
    assert!(err.message.contains("events.lock"), "{}", err.message);
    assert!(!second.health().is_ready());
    // A different prefix in the same directory is fine.
    let mut c = config(&tmp);
    c.file_prefix = "audit".into();
    c.build("third").unwrap().export(&batch(0..1)).await.unwrap();

    drop(first);
    export_when_unlocked(&second, &batch(2..4)).await;
    assert!(second.health().is_ready());
    assert_eq!(content(&tmp.path().join("out/events.jsonl")), lines(0..4));
}

#[test]
fn config_full_and_defaults() {
    let c: VolumeConfig = toml::from_str(
        r#"
        path = "/var/lib/events"
        file_prefix = "k8s"
        max_file_size = "64MiB"
        rotate_interval = "30m"
        compress = true
        compression_level = 1
        max_files = 48
        max_age = "7d"
        fsync = "500ms"
        "#,
    )
    .unwrap();
    assert_eq!(c.path, Path::new("/var/lib/events"));
    assert_eq!(c.file_prefix, "k8s");
    assert_eq!(c.max_file_size, 64 << 20);
    assert_eq!(c.rotate_interval, Duration::from_secs(1800));
    assert!(c.compress);
    assert_eq!(c.compression_level, 1);
    assert_eq!(c.max_files, Some(48));
    assert_eq!(c.max_age, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(c.fsync, FsyncPolicy::Interval(Duration::from_millis(500)));

    let d: VolumeConfig = toml::from_str(r#"path = "/data""#).unwrap();
    assert_eq!(d.file_prefix, "events");
    assert_eq!(d.max_file_size, 100 << 20);
    assert_eq!(d.rotate_interval, Duration::from_secs(3600));
    assert!(!d.compress);
    assert_eq!(d.compression_level, 6);
    assert_eq!((d.max_files, d.max_age), (None, None));
    assert_eq!(d.fsync, FsyncPolicy::Interval(Duration::from_secs(1)));
    let n = VolumeConfig::new("/data");
    assert_eq!(
        (n.file_prefix, n.max_file_size, n.rotate_interval, n.fsync),
        (d.file_prefix, d.max_file_size, d.rotate_interval, d.fsync)
    );

    let parse = |extra: &str| toml::from_str::<VolumeConfig>(&format!("path = \"/d\"\n{extra}"));
    assert_eq!(parse("fsync = \"always\"").unwrap().fsync, FsyncPolicy::Always);
    assert_eq!(parse("fsync = \"never\"").unwrap().fsync, FsyncPolicy::Never);
    assert_eq!(parse("max_file_size = 4096").unwrap().max_file_size, 4096);
    assert_eq!(
        parse("rotate_interval = \"0s\"").unwrap().rotate_interval,
        Duration::ZERO
    );
}

#[test]
fn config_errors_are_serde_errors() {
    let parse = |extra: &str| {
        toml::from_str::<VolumeConfig>(&format!("path = \"/d\"\n{extra}"))
            .unwrap_err()
            .to_string()
    };
    let e = parse("fsync = \"sometimes\"");
    assert!(e.contains("invalid fsync `sometimes`"), "{e}");
    let e = parse("fsync = \"0s\"");
    assert!(e.contains("greater than zero"), "{e}");
    let e = parse("fsync = 1");
    assert!(e.contains("fsync"), "{e}");
    let e = parse("max_file_size = \"10 parsecs\"");
    assert!(e.contains("invalid size unit"), "{e}");
    let e = parse("rotate_interval = \"soon\"");
    assert!(e.contains("invalid duration"), "{e}");
    let e = parse("max_age = \"forever\"");
    assert!(e.contains("invalid duration"), "{e}");
    let e = parse("max_size = \"1MiB\"");
    assert!(e.contains("unknown field `max_size`"), "{e}");
    let e = toml::from_str::<VolumeConfig>("compress = true")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `path`"), "{e}");
}

#[test]
fn build_validates() {
    let check = |f: &dyn Fn(&mut VolumeConfig), needle: &str| {
        let mut c = VolumeConfig::new("/tmp/never-created-by-this-test");
        f(&mut c);
        let e = c.build("vol").unwrap_err();
        assert_eq!(e.exporter, "vol");
        assert!(e.message.contains(needle), "{} does not mention {needle}", e.message);
    };
    check(&|c| c.max_file_size = 0, "max_file_size");
    check(&|c| c.file_prefix = "a/b".into(), "file_prefix");
    check(&|c| c.file_prefix = String::new(), "file_prefix");
    check(&|c| c.file_prefix = "..".into(), "file_prefix");
    check(&|c| c.compression_level = 10, "compression_level");
    check(&|c| c.max_files = Some(0), "max_files");
    check(&|c| c.max_age = Some(Duration::ZERO), "max_age");
    check(&|c| c.path = PathBuf::new(), "path");
    // Build itself writes nothing.
    let tmp = TempDir::new().unwrap();
    let mut c = VolumeConfig::new(tmp.path().join("lazy"));
    c.file_prefix = "events-2".into();
    let e = c.build("vol").unwrap();
    drop(e);
    assert!(FsyncPolicy::from_str("1s").is_ok());
    assert_eq!(FsyncPolicy::Interval(Duration::from_millis(500)).to_string(), "500ms");
}

#[tokio::test]
async fn startup_failure_is_a_runtime_error_not_a_config_error() {
    let tmp = TempDir::new().unwrap();
    let blocker = tmp.path().join("file");
    fs::write(&blocker, "x").unwrap();
    let e = VolumeConfig::new(blocker.join("sub")).build("vol").unwrap();
    // Built but not started (a standby replica): the directory is not touched.
    std::thread::sleep(Duration::from_millis(100));
    assert!(e.health().is_ready());
    let err = e.recover(None).await.unwrap_err();
    assert!(err.message.contains("cannot create directory"), "{}", err.message);
    wait_until("the startup preparation to fail", || !e.health().is_ready());
    assert!(not_ready_message(&e).contains("cannot create directory"));
    fs::remove_file(&blocker).unwrap();
    // The background thread retries and gets ready without any batch.
    wait_until("the startup preparation to succeed", || e.health().is_ready());
    assert!(blocker.join("sub/events.jsonl").exists());
}

/// Throughput check (run by hand: `cargo test --release -p
/// event-collector-exporters -- --ignored throughput --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    c.max_file_size = 256 << 20;
    let e = c.build("vol").unwrap();
    let pad = "x".repeat(1000);
    let batches: Vec<Vec<Arc<Record>>> = (0..200)
        .map(|b| {
            (0..1000)
                .map(|i| {
                    Arc::new(Record::new(
                        RecordFields::default(),
                        format!(r#"{{"i":{},"p":"{pad}"}}"#, b * 1000 + i),
                    ))
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    for b in &batches {
        e.export(b).await.unwrap();
    }
    let rate = 200_000.0 / start.elapsed().as_secs_f64();
    eprintln!("volume exporter: {rate:.0} records/s of ~1 KB, {:?}", e.stats());
    assert!(rate > 200_000.0, "{rate:.0} records/s");
}
