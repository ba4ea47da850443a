//! The anchor: written as groups become durable, final at close; a log cut
//! back to an earlier `stop`, or rewritten under a new key or the same one,
//! fails against it; an edited anchor does not load; one writer per log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{config, fill, finding, read_lines, write_lines};
use secureops_audit::{
    Anchor, AnchorError, AuditConfig, AuditError, AuditLog, Fault, FsyncPolicy, SignPolicy, anchor_path,
    load_public_key, verify, verify_with_anchor,
};
use sha2::Digest as _;

/// A config for `dir`'s log with its anchor in `anchors`.
fn anchored(dir: &Path, anchors: &Path, fsync: FsyncPolicy) -> AuditConfig {
    AuditConfig {
        anchor_dir: Some(anchors.to_owned()),
        ..config(dir, SignPolicy::Batch, fsync)
    }
}

fn anchor_of(cfg: &AuditConfig) -> Anchor {
    Anchor::find(cfg.anchor_dir.as_deref().unwrap(), &cfg.path)
        .unwrap()
        .expect("no anchor")
}

/// SHA-256 of line `seq` (0-based) of `path`.
fn line_hash(path: &Path, seq: u64) -> [u8; 32] {
    let lines = read_lines(path);
    sha2::Sha256::digest(lines[seq as usize].as_bytes()).into()
}

/// Waits until the anchor records `seq`.
fn wait_for_anchor(cfg: &AuditConfig, seq: u64) -> Anchor {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let anchor = anchor_of(cfg);
        if anchor.seq() >= seq || Instant::now() > deadline {
            return anchor;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Opens, fills with `n` findings and closes; returns the entry count.
async fn run_once(cfg: &AuditConfig, n: u64) -> u64 {
    let log = AuditLog::open(cfg.clone()).unwrap();
    fill(&log, 4, n / 4).await;
    log.close().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_follows_each_group_and_close_writes_the_last() {
    for fsync in [FsyncPolicy::Batch, FsyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let anchors = state.path().join("secureops/anchors");
        let cfg = anchored(dir.path(), &anchors, fsync);
        let log = AuditLog::open(cfg.clone()).unwrap();
        // The start entry is anchored before `open` returns.
        let first = anchor_of(&cfg);
        assert_eq!(first.seq(), 0);
        assert_eq!(first.head(), line_hash(&cfg.path, 0));
        assert_eq!(first.fingerprint(), log.fingerprint());
        let canonical = fs::canonicalize(&cfg.path).unwrap();
        assert_eq!(first.log(), canonical.to_str().unwrap());
        assert_eq!(first.file(), anchor_path(&anchors, &canonical));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(first.file()), mode(&anchors)), (0o600, 0o700), "{fsync:?}");
        for i in 1..=5 {
            let seq = log.append(finding(i)).await.unwrap();
            let anchor = wait_for_anchor(&cfg, seq);
            assert_eq!(anchor.seq(), seq, "{fsync:?}");
            assert_eq!(anchor.head(), line_hash(&cfg.path, seq), "{fsync:?}");
        }
        fill(&log, 8, 8).await;
        let count = log.close().await.unwrap();
        // Final and exact once `close` returns.
        let last = anchor_of(&cfg);
        assert_eq!(last.seq(), count - 1, "{fsync:?}");
        assert_eq!(last.head(), line_hash(&cfg.path, count - 1));
        let report = verify_with_anchor(std::slice::from_ref(&cfg.path), None, false, Some(&last)).unwrap();
        assert_eq!((report.entries, report.anchor_seq), (count, Some(count - 1)));
        assert!(!report.key_pinned);
        // Nothing but the anchor in its folder.
        let names: Vec<_> = fs::read_dir(&anchors)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_back_to_an_earlier_stop_fails_against_its_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = anchored(dir.path(), state.path(), FsyncPolicy::Batch);
    let first = run_once(&cfg, 8).await;
    let total = run_once(&cfg, 8).await;
    assert_eq!(total, first + first);
    let lines = read_lines(&cfg.path);
    assert!(lines[first as usize - 1].contains("\"kind\":\"stop\""));
    // Back to the first run's stop: on its own a complete, closed log.
    write_lines(&cfg.path, &lines[..first as usize]);
    let paths = std::slice::from_ref(&cfg.path);
    assert_eq!(verify(paths, None, false).unwrap().entries, first);

    let anchor = anchor_of(&cfg);
    assert_eq!(anchor.seq(), total - 1);
    let err = verify_with_anchor(paths, None, false, Some(&anchor)).unwrap_err();
    assert_eq!(
        (err.line, &err.fault),
        (
            first,
            &Fault::EndsBeforeAnchor {
                anchor_seq: total - 1,
                last_seq: first - 1
            }
        )
    );
    assert!(err.to_string().contains("log cut back"), "{err}");
    // Even with the key pinned.
    let key = load_public_key(&cfg.signing_key).unwrap();
    let err = verify_with_anchor(paths, Some(&key), false, Some(&anchor)).unwrap_err();
    assert!(matches!(err.fault, Fault::EndsBeforeAnchor { .. }), "{err}");

    // The next guard does not continue it (which would move the anchor on
    // and bury the cut).
    let err = AuditLog::open(cfg.clone()).unwrap_err();
    assert!(matches!(err, AuditError::Anchor { .. }), "{err}");
    assert!(err.to_string().contains("was cut back"), "{err}");
    // Nor does it start afresh where the log was deleted.
    fs::remove_file(&cfg.path).unwrap();
    let err = AuditLog::open(cfg.clone()).unwrap_err();
    assert!(err.to_string().contains("was deleted"), "{err}");
    // Moving the anchor aside (as the message says) starts over.
    fs::rename(anchor.file(), state.path().join("kept.json")).unwrap();
    run_once(&cfg, 4).await;
}

/// A closed log of `n` findings written at `path` with the key `key` and no
/// anchor: what someone holding `key` could write in place of the real one.
async fn forged_log(path: &Path, key: &Path, n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        path: dir.path().join("forged.jsonl"),
        signing_key: key.to_owned(),
        ..config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch)
    };
    run_once(&cfg, n).await;
    fs::copy(&cfg.path, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_rewritten_under_a_new_key_fails_against_its_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = anchored(dir.path(), state.path(), FsyncPolicy::Batch);
    let count = run_once(&cfg, 8).await;
    let anchor = anchor_of(&cfg);
    let new_key = dir.path().join("new.key");
    secureops_audit::generate_key(&new_key).unwrap();
    forged_log(&cfg.path, &new_key, 8).await;
    let paths = std::slice::from_ref(&cfg.path);
    // Without the anchor the forgery passes: its first entry names its key.
    assert_eq!(verify(paths, None, false).unwrap().entries, count);

    let err = verify_with_anchor(paths, None, false, Some(&anchor)).unwrap_err();
    assert_eq!(err.line, 1);
    let new_fp = secureops_audit::fingerprint_of(&load_public_key(&new_key).unwrap());
    assert_eq!(
        err.fault,
        Fault::WrongKey {
            expected: anchor.fingerprint(),
            found: new_fp.clone()
        }
    );
    // Pinning the forger's key does not help: the anchor is not theirs.
    let forger = load_public_key(&new_key).unwrap();
    let err = verify_with_anchor(paths, Some(&forger), false, Some(&anchor)).unwrap_err();
    assert_eq!((err.file.as_path(), err.line), (anchor.file(), 0));
    assert_eq!(
        err.fault,
        Fault::AnchorKey {
            anchor: anchor.fingerprint(),
            pinned: new_fp
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_rewritten_under_the_same_key_fails_at_the_anchored_entry() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = anchored(dir.path(), state.path(), FsyncPolicy::Batch);
    let count = run_once(&cfg, 8).await;
    let anchor = anchor_of(&cfg);
    // Same key, same length, other content (at least other timestamps).
    forged_log(&cfg.path, &cfg.signing_key, 8).await;
    let paths = std::slice::from_ref(&cfg.path);
    assert_eq!(verify(paths, None, false).unwrap().entries, count);
    let err = verify_with_anchor(paths, None, false, Some(&anchor)).unwrap_err();
    assert_eq!((err.line, err.fault), (count, Fault::AnchorMismatch { seq: count - 1 }));
}

#[tokio::test]
async fn an_edited_anchor_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = anchored(dir.path(), state.path(), FsyncPolicy::Batch);
    run_once(&cfg, 4).await;
    let anchor = anchor_of(&cfg);
    let original = fs::read(anchor.file()).unwrap();
    // Every single flipped bit, anywhere in the file, is caught.
    for i in 0..original.len() {
        let mut edited = original.clone();
        edited[i] ^= 0x01;
        fs::write(anchor.file(), &edited).unwrap();
        match Anchor::load(anchor.file()) {
            Err(AnchorError::BadSignature { .. } | AnchorError::Malformed { .. }) => {}
            other => panic!("byte {i} flipped: {other:?}"),
        }
    }
    // The head, say: the content no longer matches its signature.
    let text = String::from_utf8(original.clone()).unwrap();
    let at = text.find("\"head\":\"").unwrap() + 8;
    let mut edited = original.clone();
    edited[at] = if edited[at] == b'0' { b'1' } else { b'0' };
    fs::write(anchor.file(), &edited).unwrap();
    let err = Anchor::load(anchor.file()).unwrap_err();
    assert!(matches!(err, AnchorError::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("bad anchor signature"), "{err}");
    // A guard does not continue past a damaged anchor either.
    let err = AuditLog::open(cfg.clone()).unwrap_err();
    assert!(matches!(err, AuditError::Anchor { .. }), "{err}");
    fs::write(anchor.file(), &original).unwrap();
    assert_eq!(Anchor::load(anchor.file()).unwrap(), anchor);
}

#[tokio::test]
async fn an_anchor_filed_under_another_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let cfg = anchored(dir.path(), state.path(), FsyncPolicy::Batch);
    run_once(&cfg, 4).await;
    let other = dir.path().join("other.jsonl");
    fs::copy(&cfg.path, &other).unwrap();
    let other_anchor = anchor_path(state.path(), &fs::canonicalize(&other).unwrap());
    fs::copy(anchor_of(&cfg).file(), &other_anchor).unwrap();
    let err = Anchor::find(state.path(), &other).unwrap_err();
    assert!(matches!(err, AnchorError::OtherLog { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_while_the_first_has_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    let first = AuditLog::open(cfg.clone()).unwrap();
    first.append(finding(1)).await.unwrap();
    let err = AuditLog::open(cfg.clone()).unwrap_err();
    assert!(matches!(&err, AuditError::InUse { path } if *path == cfg.path), "{err}");
    assert!(err.to_string().contains("in use by another writer"), "{err}");
    // The refused writer left no trace in the log.
    assert_eq!(read_lines(&cfg.path).len(), 2);
    // Closing lets go of the log at once (the handle is still alive).
    first.close().await.unwrap();
    let second = AuditLog::open(cfg.clone()).unwrap();
    assert!(matches!(AuditLog::open(cfg.clone()), Err(AuditError::InUse { .. })));
    // So does dropping the last handle without a close.
    second.append(finding(2)).await.unwrap();
    drop(second);
    let third = AuditLog::open(cfg.clone()).unwrap();
    third.close().await.unwrap();
    // start, 1, stop; restart, 2 (no stop); restart, stop.
    let report = verify(std::slice::from_ref(&cfg.path), None, false).unwrap();
    assert_eq!(report.entries, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anchor_follows_the_live_file_over_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = anchored(dir.path(), state.path(), FsyncPolicy::Batch);
    cfg.rotate_bytes = 4000;
    let log = AuditLog::open(cfg.clone()).unwrap();
    for i in 0..60 {
        log.append(finding(i)).await.unwrap();
    }
    let count = log.close().await.unwrap();
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| dir.path().join(format!("audit.{n}.jsonl")))
        .take_while(|p| p.exists())
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    files.push(cfg.path.clone());
    let anchor = anchor_of(&cfg);
    assert_eq!(anchor.seq(), count - 1);
    let report = verify_with_anchor(&files, None, false, Some(&anchor)).unwrap();
    assert_eq!(report.anchor_seq, Some(count - 1));
    // The series without its last file ends before the anchor.
    let err = verify_with_anchor(&files[..files.len() - 1], None, false, Some(&anchor)).unwrap_err();
    assert!(matches!(err.fault, Fault::EndsBeforeAnchor { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_that_cannot_be_written_fails_no_decision() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    fs::write(&blocker, b"").unwrap();
    let cfg = anchored(dir.path(), &blocker.join("anchors"), FsyncPolicy::Batch);
    let log = AuditLog::open(cfg.clone()).unwrap();
    let seqs = fill(&log, 4, 10).await;
    assert_eq!(seqs.len(), 40);
    assert_eq!(log.close().await.unwrap(), 42);
    assert_eq!(
        verify(std::slice::from_ref(&cfg.path), None, false).unwrap().entries,
        42
    );
}
