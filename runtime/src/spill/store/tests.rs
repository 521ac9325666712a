//! Spill store: append, read, ack, restart, damage, cap.

use std::os::unix::fs::FileExt;

use super::*;

fn opts(dir: &Path) -> SpillOptions {
    SpillOptions {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 200,
    }
}

fn payloads(from: usize, n: usize) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| format!("record-{i:04}").into_bytes())
        .collect()
}

fn texts(b: &ReadBatch) -> Vec<String> {
    b.payloads
        .iter()
        .map(|p| String::from_utf8(p.clone()).unwrap())
        .collect()
}

fn names(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("record-{i:04}")).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Reads and acknowledges everything, in batches of `n`.
fn drain(s: &mut SpillStore, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let b = s.read(n, u64::MAX).unwrap();
        if b.payloads.is_empty() {
            return out;
        }
        out.extend(texts(&b));
        s.ack(&b).unwrap();
    }
}

#[test]
fn append_read_ack_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, problems) = SpillStore::open(opts(dir.path())).unwrap();
    assert!(problems.is_empty());
    assert!(s.is_empty());
    for i in 0..10 {
        s.append(&payloads(i * 5, 5)).unwrap();
    }
    assert_eq!(s.records(), 50);
    assert_eq!(s.bytes(), 50 * (FRAME_HEADER + 11));
    assert!(segments(dir.path()).len() > 1, "200-byte segments roll over");

    // A read without ack does not remove anything.
    let first = s.read(7, u64::MAX).unwrap();
    assert_eq!(texts(&first), names(0, 7));
    assert_eq!(texts(&s.read(7, u64::MAX).unwrap()), names(0, 7));
    s.ack(&first).unwrap();
    assert_eq!(s.records(), 43);
    // A byte limit stops after the record that crosses it (at least one record).
    let small = s.read(100, 1).unwrap();
    assert_eq!(texts(&small), names(7, 1));
    s.ack(&small).unwrap();
    assert_eq!(drain(&mut s, 9), names(8, 42));
    assert_eq!(s.records(), 0);
    assert_eq!(s.bytes(), 0);
    assert!(segments(dir.path()).is_empty(), "read segments are deleted");
    // Appending after a full drain starts a new segment.
    s.append(&payloads(50, 2)).unwrap();
    assert_eq!(drain(&mut s, 10), names(50, 2));
}

#[test]
fn a_restart_resumes_at_the_acknowledged_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
        s.append(&payloads(0, 30)).unwrap();
        let b = s.read(12, u64::MAX).unwrap();
        s.ack(&b).unwrap();
        // Read but not acknowledged: comes back after the restart.
        let _ = s.read(5, u64::MAX).unwrap();
    }
    let (mut s, problems) = SpillStore::open(opts(dir.path())).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(s.records(), 18);
    // New records go after the old ones.
    s.append(&payloads(30, 3)).unwrap();
    assert_eq!(drain(&mut s, 4), names(12, 21));
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, _) = SpillStore::open(opts(dir.path())).unwrap();
    let err = SpillStore::open(opts(dir.path())).unwrap_err();
    assert!(matches!(err, SpillError::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn a_torn_tail_is_reported_with_its_path_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
        s.append(&payloads(0, 3)).unwrap();
    }
    // A crash in the middle of the next write: half a record at the end.
    let seg = segments(dir.path()).pop().unwrap();
    let f = OpenOptions::new().append(true).open(&seg).unwrap();
    let mut half = Vec::new();
    frame(&mut half, b"record-0003");
    (&f).write_all(&half[..10]).unwrap();
    drop(f);

    let (mut s, problems) = SpillStore::open(opts(dir.path())).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert_eq!(p.damage, Damage::Torn);
    assert_eq!(p.path, seg);
    assert_eq!(p.offset, 3 * (FRAME_HEADER + 11));
    assert_eq!(p.ignored_bytes, 10);
    assert!(p.to_string().contains(&seg.display().to_string()), "{p}");
    assert_eq!(s.records(), 3);
    // New appends go to a new segment, never after the damage.
    s.append(&payloads(4, 1)).unwrap();
    let mut want = names(0, 3);
    want.extend(names(4, 1));
    assert_eq!(drain(&mut s, 10), want);
}

#[test]
fn a_checksum_mismatch_stops_that_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
        // 200-byte segments of 19-byte records: 11 per segment.
        s.append(&payloads(0, 11)).unwrap();
        s.append(&payloads(11, 11)).unwrap();
    }
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2);
    // Flip one payload byte of the third record of the first segment.
    let f = OpenOptions::new().write(true).open(&segs[0]).unwrap();
    let off = 2 * (FRAME_HEADER + 11) + FRAME_HEADER + 3;
    f.write_all_at(b"X", off).unwrap();
    drop(f);
    let (mut s, problems) = SpillStore::open(opts(dir.path())).unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].damage, Damage::Checksum);
    assert_eq!(problems[0].path, segs[0]);
    assert_eq!(problems[0].offset, 2 * (FRAME_HEADER + 11));
    let mut want = names(0, 2);
    want.extend(names(11, 11));
    assert_eq!(s.records(), 13);
    assert_eq!(drain(&mut s, 5), want);
}

#[test]
fn damage_that_appears_after_open_is_found_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
    s.append(&payloads(0, 5)).unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    // A length field that cannot be right, on the fourth record.
    f.write_all_at(&u32::MAX.to_le_bytes(), 3 * (FRAME_HEADER + 11))
        .unwrap();
    let b = s.read(10, u64::MAX).unwrap();
    assert_eq!(texts(&b), names(0, 3));
    assert_eq!(b.problems.len(), 1);
    assert_eq!(b.problems[0].damage, Damage::BadLength);
    s.ack(&b).unwrap();
    assert_eq!(s.records(), 0);
    assert!(s.read(10, u64::MAX).unwrap().payloads.is_empty());
}

#[test]
fn the_cap_refuses_appends_until_records_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_bytes = 10 * (FRAME_HEADER + 11);
    let (mut s, _) = SpillStore::open(o).unwrap();
    s.append(&payloads(0, 10)).unwrap();
    assert!(!s.has_room(FRAME_HEADER + 11));
    let err = s.append(&payloads(10, 1)).unwrap_err();
    assert!(matches!(err, SpillError::Full { .. }), "{err}");
    assert_eq!(err.reason(), "spill_full");
    assert_eq!(s.records(), 10, "a refused append writes nothing");
    let b = s.read(1, u64::MAX).unwrap();
    s.ack(&b).unwrap();
    s.append(&payloads(10, 1)).unwrap();
    assert_eq!(drain(&mut s, 100), names(1, 10));
}

#[test]
fn prepend_puts_records_in_front_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
        s.append(&payloads(10, 8)).unwrap();
        // Partly read front segment.
        let b = s.read(3, u64::MAX).unwrap();
        s.ack(&b).unwrap();
        s.prepend(&payloads(0, 4)).unwrap();
        s.prepend(&payloads(100, 1)).unwrap();
        assert_eq!(s.records(), 10);
    }
    let (mut s, problems) = SpillStore::open(opts(dir.path())).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut want = names(100, 1);
    want.extend(names(0, 4));
    want.extend(names(13, 5));
    assert_eq!(drain(&mut s, 3), want);
}

#[test]
fn a_prepend_the_index_never_recorded_is_discarded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
        s.append(&payloads(0, 2)).unwrap();
    }
    // A crash after writing a front segment but before the index moved to it.
    let front = seg_id(segments(dir.path())[0].file_name().unwrap().to_str().unwrap()).unwrap();
    let stray = dir.path().join(seg_name(front - 1));
    let mut buf = Vec::new();
    frame(&mut buf, b"never-acknowledged");
    fs::write(&stray, buf).unwrap();
    let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
    assert!(!stray.exists());
    assert_eq!(drain(&mut s, 10), names(0, 2));
}

#[test]
fn a_damaged_index_replays_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
        s.append(&payloads(0, 4)).unwrap();
        let b = s.read(2, u64::MAX).unwrap();
        s.ack(&b).unwrap();
    }
    fs::write(dir.path().join("index"), "garbage").unwrap();
    let (mut s, problems) = SpillStore::open(opts(dir.path())).unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, dir.path().join("index"));
    // At least once: the acknowledged two come back too.
    assert_eq!(drain(&mut s, 10), names(0, 4));
}

#[test]
fn index_text_round_trips_and_rejects_edits() {
    let i = Index {
        front: 7,
        starts: vec![(7, 19), (9, 38)],
    };
    assert_eq!(Index::parse(&i.to_text()), Some(i));
    let edited = Index {
        front: 7,
        starts: vec![],
    }
    .to_text()
    .replace("front 7", "front 8");
    assert_eq!(Index::parse(&edited), None);
}

#[test]
fn an_unwritable_directory_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the directory should be: even root cannot create in it.
    let path = dir.path().join("spill");
    fs::write(&path, "not a directory").unwrap();
    let err = SpillStore::open(opts(&path)).unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

/// Records prepended while a batch is out (read, not yet acknowledged) are
/// not in that batch: its acknowledgement must leave them to be read next.
/// (The queue prepends when it moves a failing sink's memory to disk.)
#[test]
fn an_ack_after_a_prepend_keeps_the_prepended_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = SpillStore::open(opts(dir.path())).unwrap();
    s.append(&payloads(10, 6)).unwrap();
    let b = s.read(4, u64::MAX).unwrap();
    assert_eq!(b.payloads.len(), 4);
    s.prepend(&payloads(0, 3)).unwrap();
    s.ack(&b).unwrap();
    assert_eq!(s.records(), 5, "3 prepended + 2 not yet read");
    let mut want = names(0, 3);
    want.extend(names(14, 2));
    assert_eq!(drain(&mut s, 2), want);
    // And across a restart.
    s.append(&payloads(20, 2)).unwrap();
    let b = s.read(1, u64::MAX).unwrap();
    s.prepend(&payloads(30, 1)).unwrap();
    s.ack(&b).unwrap();
    drop(s);
    let (mut s, problems) = SpillStore::open(opts(dir.path())).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut want = names(30, 1);
    want.extend(names(21, 1));
    assert_eq!(drain(&mut s, 5), want);
}
