//! Tests of reading back the Volume output after a saved position
//! (`recover.rs`): the bound, rotation and compression, torn and empty files.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use super::recover::{Mark, Part, plan, scan};
use super::{VolumeConfig, VolumeExporter};
use crate::{Delivered, Exporter, Record, RecordFields};

fn ev(i: usize) -> Arc<Record> {
    Arc::new(Record::new(
        RecordFields::default(),
        format!(r#"{{"uid":"u{i}","resource_version":"{i}","object":{{"uid":"o{i}"}},"msg":"event {i:06}"}}"#),
    ))
}

fn evs(range: std::ops::Range<usize>) -> Vec<Arc<Record>> {
    range.map(ev).collect()
}

fn keys(range: std::ops::Range<usize>) -> Delivered {
    let mut d = Delivered::default();
    for i in range {
        d.insert(&format!("u{i}"), &i.to_string());
    }
    d
}

fn config(tmp: &TempDir) -> VolumeConfig {
    let mut c = VolumeConfig::new(tmp.path().join("out"));
    c.rotate_interval = Duration::ZERO;
    c
}

/// `recover`, waiting for the previous owner of the files (being dropped) to let go of the lock.
async fn recover_when_unlocked(e: &VolumeExporter, from: Option<&str>) -> Delivered {
    for _ in 0..1000 {
        match e.recover(from).await {
            Ok(k) => return k,
            Err(err) => {
                assert_eq!(err.reason, "locked", "{}", err.message);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("the lock was never released");
}

async fn start(c: &VolumeConfig) -> VolumeExporter {
    let e = c.build("vol").unwrap();
    e.recover(None).await.unwrap();
    e
}

#[test]
fn marks_round_trip_and_foreign_positions_are_refused() {
    let m = Mark {
        last: Some(super::naming::NameKey {
            ts: "20240131T235958.007Z".into(),
            seq: 12,
        }),
        dev: 2049,
        ino: 77,
        offset: 4096,
    };
    assert_eq!(Mark::decode(&m.encode()), Some(m.clone()));
    let none = Mark { last: None, ..m };
    assert_eq!(Mark::decode(&none.encode()), Some(none));
    for bad in [
        "",
        "kafka-v1;x",
        "volume-v1;-;1;2",
        "volume-v1;-;1;2;3;4",
        "volume-v1;-;a;2;3",
    ] {
        assert_eq!(Mark::decode(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn reads_back_exactly_what_was_written_after_the_position() {
    let tmp = TempDir::new().unwrap();
    let e = start(&config(&tmp)).await;
    e.export(&evs(0..10)).await.unwrap();
    let pos = e.position().expect("a position once started");
    e.export(&evs(10..25)).await.unwrap();
    let end = e.position().unwrap();
    drop(e);

    // A restart (after a kill: the lock of a dead process is free).
    let e = config(&tmp).build("vol").unwrap();
    assert_eq!(recover_when_unlocked(&e, Some(&pos)).await, keys(10..25));
    // At the end: nothing after it.
    assert!(e.recover(Some(&end)).await.unwrap().is_empty());
    // No saved state (a fresh start): nothing to read back.
    assert!(e.recover(None).await.unwrap().is_empty());
    // A position of another kind: nothing either, and no error.
    assert!(e.recover(Some("kafka-v1;t:0:5")).await.unwrap().is_empty());
}

#[tokio::test]
async fn empty_directory_and_empty_file() {
    let tmp = TempDir::new().unwrap();
    let e = start(&config(&tmp)).await;
    let pos = e.position().expect("the empty active file has a position");
    assert!(e.recover(None).await.unwrap().is_empty());
    assert!(e.recover(Some(&pos)).await.unwrap().is_empty());
    assert!(tmp.path().join("out/events.jsonl").exists());
}

#[tokio::test]
async fn follows_rotations_and_compression() {
    let tmp = TempDir::new().unwrap();
    let mut c = config(&tmp);
    // About 3 records per file: every other batch rotates.
    c.max_file_size = 300;
    c.compress = true;
    let e = start(&c).await;
    e.export(&evs(0..2)).await.unwrap();
    e.export(&evs(2..3)).await.unwrap();
    let pos = e.position().unwrap();
    for i in 3..12 {
        e.export(&evs(i..i + 1)).await.unwrap();
    }
    e.settle();
    let gz = fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().ends_with(".jsonl.gz"))
        .count();
    assert!(gz >= 3, "rotated and compressed: {gz}");
    drop(e);
    let e = c.build("vol").unwrap();
    assert_eq!(recover_when_unlocked(&e, Some(&pos)).await, keys(3..12));
}

#[tokio::test]
async fn a_torn_last_line_is_cut_and_not_counted() {
    let tmp = TempDir::new().unwrap();
    let e = start(&config(&tmp)).await;
    e.export(&evs(0..3)).await.unwrap();
    let pos = e.position().unwrap();
    e.export(&evs(3..5)).await.unwrap();
    drop(e);
    // Killed in the middle of writing record 5.
    let active = tmp.path().join("out/events.jsonl");
    let full = ev(5).json.clone();
    let mut f = fs::OpenOptions::new().append(true).open(&active).unwrap();
    std::io::Write::write_all(&mut f, &full[..full.len() / 2]).unwrap();
    drop(f);
    let e = config(&tmp).build("vol").unwrap();
    assert_eq!(recover_when_unlocked(&e, Some(&pos)).await, keys(3..5));
    assert!(e.stats().torn_bytes_truncated > 0);
    assert!(fs::read(&active).unwrap().ends_with(b"\n"), "the torn tail is gone");
    e.export(&evs(5..6)).await.unwrap();
    assert_eq!(e.recover(Some(&pos)).await.unwrap(), keys(3..6));
}

#[test]
fn scan_skips_foreign_lines_a_torn_tail_and_missing_files() {
    let tmp = TempDir::new().unwrap();
    let a = tmp.path().join("a.jsonl");
    fs::write(
        &a,
        concat!(
            "{\"uid\":\"u1\",\"resource_version\":\"1\"}\n",
            "not json\n",
            "{\"dead_letter\":{},\"event\":{\"uid\":\"u9\",\"resource_version\":\"9\"}}\n",
            "{\"uid\":\"\",\"resource_version\":\"3\"}\n",
            "{\"uid\":\"u\\u0032\",\"resource_version\":\"2\"}\n",
            "{\"uid\":\"u4\",\"resource_ver"
        ),
    )
    .unwrap();
    let part = |offset| Part {
        plain: a.clone(),
        gz: None,
        offset,
    };
    let missing = Part {
        plain: tmp.path().join("gone.jsonl"),
        gz: Some(tmp.path().join("gone.jsonl.gz")),
        offset: 0,
    };
    let s = scan(&[missing, part(0)]).unwrap();
    let mut want = Delivered::default();
    want.insert("u1", "1");
    want.insert("u2", "2");
    assert_eq!(s.keys, want);
    assert_eq!((s.files, s.lines, s.skipped), (1, 5, 3));
    assert!(s.torn_bytes > 0);
    // An offset into the middle of a line: that line is not an event.
    let s = scan(&[part(5)]).unwrap();
    assert_eq!(s.keys.len(), 1);
    // An offset past the end (not the file of the mark): nothing.
    assert!(scan(&[part(1 << 20)]).unwrap().keys.is_empty());
}

/// The plan's files by name, with the offset each is read from.
fn planned(dir: &std::path::Path, active: &std::path::Path, mark: &Mark) -> Vec<(String, u64)> {
    plan(dir, "events", active, mark)
        .unwrap()
        .iter()
        .map(|p| (p.plain.file_name().unwrap().to_string_lossy().into_owned(), p.offset))
        .collect()
}

/// A mark on `file` as it is now (its dev and inode), no rotated name, offset 0.
fn mark_of(file: &std::path::Path) -> Mark {
    let meta = fs::metadata(file).unwrap();
    Mark {
        last: None,
        dev: std::os::unix::fs::MetadataExt::dev(&meta),
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
        offset: 0,
    }
}

#[test]
fn the_plan_starts_in_the_marked_file() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let active = dir.join("events.jsonl");
    fs::write(&active, "").unwrap();
    let old = "events-20240101T000000.000Z-000.jsonl.gz";
    let marked = "events-20240101T000001.000Z-000.jsonl";
    let later = "events-20240101T000002.000Z-000.jsonl.gz";
    for n in [old, marked, later, "events-20240101T000003.000Z-000.jsonl.gz.tmp"] {
        fs::write(dir.join(n), "").unwrap();
    }
    let last = super::naming::parse("events", old).unwrap().0;
    let mark = Mark {
        last: Some(last),
        dev: 0,
        ino: 0,
        offset: 123,
    };
    assert_eq!(
        planned(dir, &active, &mark),
        vec![
            (marked.to_string(), 123),
            ("events-20240101T000002.000Z-000.jsonl".to_string(), 0),
            ("events.jsonl".to_string(), 0),
        ]
    );
    // The marked file is still the active one: only its tail.
    let mark = Mark {
        last: super::naming::parse("events", later).map(|k| k.0),
        offset: 0,
        ..mark_of(&active)
    };
    let p = plan(dir, "events", &active, &mark).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].plain.clone(), p[0].offset), (active.clone(), 0));
}

/// The marked file was rotated and gzipped, and the new active file got its
/// inode number back (the file system reuses a freed one): the marked file
/// is still the first rotated one, and the active file is read whole.
#[test]
fn the_plan_is_not_fooled_by_a_reused_inode() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let active = dir.join("events.jsonl");
    fs::write(&active, "").unwrap();
    let marked = "events-20240101T000001.000Z-000.jsonl.gz";
    let later = "events-20240101T000002.000Z-000.jsonl.gz";
    for n in [marked, later] {
        fs::write(dir.join(n), "").unwrap();
    }
    let mark = Mark {
        last: None,
        offset: 321,
        // The active file's own dev and inode, as a reused inode would give.
        ..mark_of(&active)
    };
    assert_eq!(
        planned(dir, &active, &mark),
        vec![
            ("events-20240101T000001.000Z-000.jsonl".to_string(), 321),
            ("events-20240101T000002.000Z-000.jsonl".to_string(), 0),
            ("events.jsonl".to_string(), 0),
        ]
    );
}

#[tokio::test]
async fn a_standby_exporter_leaves_the_directory_alone() {
    let tmp = TempDir::new().unwrap();
    let leader = start(&config(&tmp)).await;
    leader.export(&evs(0..2)).await.unwrap();
    // Built on the standby: neither the lock nor the files are touched.
    let standby = config(&tmp).build("standby").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(standby.health().is_ready());
    assert!(standby.position().is_none());
    let pos = leader.position().unwrap();
    leader.export(&evs(2..4)).await.unwrap();
    drop(leader);
    // The leader is gone: the standby takes over and reads back its tail.
    let got = recover_when_unlocked(&standby, Some(&pos)).await;
    assert_eq!(got, keys(2..4));
}
