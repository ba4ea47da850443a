//! Properties of whole chains written by the real writer: any single
//! deletion, duplication, reorder or truncation is caught by `verify`, and
//! with `allow_open` a log cut at a line boundary verifies exactly when its
//! last kept line carries a signature (what is not signed yet is never
//! vouched for). Edits of single bytes are in `tamper.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{config, fill, is_signed};
use proptest::prelude::*;
use secureops_audit::{AuditLog, FsyncPolicy, SignPolicy, verify};

/// A closed two-segment log (a run, then a restart continuing the chain),
/// batch-signed with concurrent appends, so it holds signed and unsigned
/// lines, two `start` and two `stop` entries.
fn chain() -> &'static (tempfile::TempDir, Vec<String>) {
    static CHAIN: OnceLock<(tempfile::TempDir, Vec<String>)> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
        let path = cfg.path.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        for _ in 0..2 {
            let cfg = cfg.clone();
            rt.block_on(async {
                let log = AuditLog::open(cfg).unwrap();
                fill(&log, 3, 3).await;
                log.close().await.unwrap();
            });
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        assert!(lines.iter().any(|l| !is_signed(l)), "some lines must be unsigned");
        assert!(verify(&[path], None, false).is_ok());
        (dir, lines)
    })
}

/// Writes `bytes` to a fresh file and verifies it.
fn verdict(bytes: &[u8], allow_open: bool) -> Result<u64, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let (dir, _) = chain();
    let path: PathBuf = dir
        .path()
        .join(format!("case-{}.jsonl", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    let result = verify(std::slice::from_ref(&path), None, allow_open);
    std::fs::remove_file(&path).unwrap();
    result.map(|r| r.entries).map_err(|e| e.to_string())
}

fn joined(lines: &[String]) -> Vec<u8> {
    let mut text = lines.join("\n");
    text.push('\n');
    text.into_bytes()
}

proptest! {
    // Signature checks are slow in debug builds: 64 cases per property.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn deleting_any_line_is_caught(at in any::<prop::sample::Index>(), open in any::<bool>()) {
        let (_, lines) = chain();
        let mut edited = lines.clone();
        let i = at.index(lines.len());
        // Without the last line an open log is a prefix: see below.
        prop_assume!(!(open && i == lines.len() - 1));
        edited.remove(i);
        prop_assert!(verdict(&joined(&edited), open).is_err(), "line {} deleted", i + 1);
    }

    #[test]
    fn duplicating_any_line_is_caught(at in any::<prop::sample::Index>(), open in any::<bool>()) {
        let (_, lines) = chain();
        let mut edited = lines.clone();
        let i = at.index(lines.len());
        edited.insert(i, lines[i].clone());
        prop_assert!(verdict(&joined(&edited), open).is_err(), "line {} doubled", i + 1);
    }

    #[test]
    fn moving_any_line_is_caught(
        from in any::<prop::sample::Index>(),
        to in any::<prop::sample::Index>(),
        open in any::<bool>(),
    ) {
        let (_, lines) = chain();
        let (i, j) = (from.index(lines.len()), to.index(lines.len()));
        prop_assume!(i != j);
        let mut edited = lines.clone();
        let line = edited.remove(i);
        edited.insert(j, line);
        prop_assert!(verdict(&joined(&edited), open).is_err(), "line {} moved to {}", i + 1, j + 1);
    }

    #[test]
    fn swapping_any_two_lines_is_caught(a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let (_, lines) = chain();
        let (i, j) = (a.index(lines.len()), b.index(lines.len()));
        prop_assume!(i != j);
        let mut edited = lines.clone();
        edited.swap(i, j);
        prop_assert!(verdict(&joined(&edited), true).is_err(), "lines {} and {} swapped", i + 1, j + 1);
    }

    /// A closed log cut anywhere no longer verifies as closed.
    #[test]
    fn any_truncation_of_a_closed_log_is_caught(at in any::<prop::sample::Index>()) {
        let (_, lines) = chain();
        let bytes = joined(lines);
        let cut = at.index(bytes.len());
        prop_assert!(verdict(&bytes[..cut], false).is_err(), "cut at byte {}", cut);
    }

    /// Read as a log still being written, a prefix of whole lines verifies
    /// exactly when its last line is signed.
    #[test]
    fn open_prefix_verifies_only_up_to_a_signature(at in any::<prop::sample::Index>()) {
        let (_, lines) = chain();
        let keep = 1 + at.index(lines.len());
        let result = verdict(&joined(&lines[..keep]), true);
        if is_signed(&lines[keep - 1]) {
            prop_assert_eq!(result, Ok(keep as u64));
        } else {
            prop_assert!(result.is_err(), "{} lines, the last unsigned, verified", keep);
        }
    }
}
