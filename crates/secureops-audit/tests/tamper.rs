//! Editing, deleting, inserting, reordering or cutting lines makes `verify`
//! fail at the right line with the right fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{is_signed, make_log, read_lines, write_lines};
use proptest::prelude::*;
use secureops_audit::{Fault, SignPolicy, VerifyError, generate_key, load_public_key, verify};

/// A fresh copy of a closed batch-signed log with 40 findings (42 lines).
fn log(dir: &Path) -> (PathBuf, Vec<String>) {
    let path = make_log(dir, SignPolicy::Batch, 40);
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 42);
    (path, lines)
}

fn fails(path: &Path, allow_open: bool) -> (u64, Fault) {
    let err: VerifyError = verify(&[path.to_owned()], None, allow_open).unwrap_err();
    assert_eq!(err.file, path);
    (err.line, err.fault)
}

#[test]
fn untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = log(dir.path());
    assert_eq!(verify(&[path], None, false).unwrap().entries, 42);
}

#[test]
fn flipped_byte_in_a_middle_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, lines) = log(dir.path());
    for n in [2usize, 10, 20, 30, 41] {
        let mut edited = lines.clone();
        // Change a character of the host (inside a string, still valid JSON).
        edited[n - 1] = edited[n - 1]
            .replacen(".example", ".exampme", 1)
            .replacen(".github", ".githuc", 1);
        assert_ne!(edited[n - 1], lines[n - 1]);
        write_lines(&path, &edited);
        let expected = if is_signed(&lines[n - 1]) {
            Fault::BadSignature
        } else {
            Fault::Altered
        };
        assert_eq!(fails(&path, false), (n as u64, expected), "line {n}");
    }
}

#[test]
fn deleted_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut lines) = log(dir.path());
    lines.remove(19); // seq 19 (line 20)
    write_lines(&path, &lines);
    assert_eq!(
        fails(&path, false),
        (
            20,
            Fault::SeqGap {
                expected: 19,
                found: 20
            }
        )
    );
}

#[test]
fn inserted_copy_of_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut lines) = log(dir.path());
    let copy = lines[9].clone(); // seq 9
    lines.insert(15, copy);
    write_lines(&path, &lines);
    assert_eq!(fails(&path, false), (16, Fault::Duplicate { seq: 9 }));
}

#[test]
fn swapped_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut lines) = log(dir.path());
    lines.swap(11, 12);
    write_lines(&path, &lines);
    assert_eq!(
        fails(&path, false),
        (
            12,
            Fault::Reorder {
                expected: 11,
                found: 12
            }
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let (path, mut lines) = log(dir.path());
    lines.swap(5, 30);
    write_lines(&path, &lines);
    assert_eq!(fails(&path, false), (6, Fault::Reorder { expected: 5, found: 30 }));
}

#[test]
fn last_line_cut_in_half() {
    let dir = tempfile::tempdir().unwrap();
    let (path, lines) = log(dir.path());
    let mut text = lines.join("\n");
    let last = lines.last().unwrap();
    text.truncate(text.len() - last.len() / 2);
    std::fs::write(&path, text).unwrap();
    assert_eq!(fails(&path, false), (42, Fault::TornLastLine));
    assert_eq!(fails(&path, true), (42, Fault::TornLastLine));
}

#[test]
fn dropped_stop_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut lines) = log(dir.path());
    lines.pop();
    write_lines(&path, &lines);
    assert_eq!(fails(&path, false), (41, Fault::NotClosed));
    let report = verify(&[path], None, true).unwrap();
    assert_eq!((report.entries, report.closed), (41, false));
}

#[test]
fn appended_line_after_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut lines) = log(dir.path());
    let copy = lines[3].clone();
    lines.push(copy);
    write_lines(&path, &lines);
    assert_eq!(fails(&path, false), (43, Fault::AfterStop));
}

#[test]
fn pinned_key_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = log(dir.path());
    let other = dir.path().join("other.key");
    generate_key(&other).unwrap();
    let other = load_public_key(&dir.path().join("other.key.pub")).unwrap();
    let err = verify(std::slice::from_ref(&path), Some(&other), false).unwrap_err();
    assert_eq!(err.line, 1);
    assert!(matches!(err.fault, Fault::WrongKey { .. }), "{err}");
    let own = load_public_key(&dir.path().join("audit.key")).unwrap();
    assert!(verify(&[path], Some(&own), false).unwrap().key_pinned);
}

#[test]
fn empty_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(fails(&empty, true), (0, Fault::Empty));
    let err = verify(&[dir.path().join("missing")], None, true).unwrap_err();
    assert!(matches!(err.fault, Fault::Io(_)), "{err}");
}

#[test]
fn series_split_over_files() {
    let dir = tempfile::tempdir().unwrap();
    let (path, lines) = log(dir.path());
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    write_lines(&a, &lines[..17]);
    write_lines(&b, &lines[17..]);
    assert_eq!(verify(&[a.clone(), b.clone()], None, false).unwrap().entries, 42);
    let err = verify(&[b.clone(), a.clone()], None, false).unwrap_err();
    assert_eq!((err.file, err.line, err.fault), (b, 1, Fault::NotStarted));
    drop(path);
}

/// One log shared by all proptest cases.
fn shared_log() -> &'static (tempfile::TempDir, Vec<u8>) {
    static LOG: OnceLock<(tempfile::TempDir, Vec<u8>)> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = make_log(dir.path(), SignPolicy::Batch, 16);
        let bytes = std::fs::read(path).unwrap();
        (dir, bytes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any single changed byte makes verification fail, at that byte's line.
    #[test]
    fn any_flipped_byte_fails_at_its_line(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let (dir, bytes) = shared_log();
        let i = at.index(bytes.len());
        let mut edited = bytes.clone();
        edited[i] ^= xor;
        let line = bytes[..i].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        let path = dir.path().join(format!("flip-{i}-{xor}.jsonl"));
        std::fs::write(&path, &edited).unwrap();
        let result = verify(std::slice::from_ref(&path), None, true);
        std::fs::remove_file(&path).unwrap();
        let err = result.err();
        prop_assert!(err.is_some(), "flip at {} by {:#x} went unnoticed", i, xor);
        let err = err.unwrap();
        prop_assert_eq!(err.line, line, "{}", err);
    }
}
