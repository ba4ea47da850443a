//! Unit tests that need crate internals: deterministic groups and injected
//! write/sync failures.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;

use crate::config::{AuditConfig, FsyncPolicy, SignPolicy};
use crate::encode::Encoder;
use crate::resume::ChainHead;
use crate::storage::{FileStorage, Storage};
use crate::writer::{Slot, Writer};
use crate::{AuditError, AuditFinding, AuditLog, Fault, Kind, Verdict, Via, verify};

fn finding(i: usize) -> AuditFinding {
    AuditFinding::new(Kind::Egress, Verdict::Deny, "not in allowlist")
        .with_host(format!("host{i}.example"))
        .with_port(443)
        .with_via(Via::Connect)
        .with_process(Some(4242), Some("/usr/bin/curl".to_owned()))
        .with_status(403)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn config(sign: SignPolicy, fsync: FsyncPolicy) -> AuditConfig {
    AuditConfig {
        sign,
        fsync,
        version: "test".to_owned(),
        ..AuditConfig::default()
    }
}

fn file_writer(path: &Path, sign: SignPolicy, fsync: FsyncPolicy) -> Writer<FileStorage> {
    let storage = FileStorage::open(path, 0).unwrap();
    Writer::new(
        storage,
        Encoder::new(key(), "test".to_owned()),
        ChainHead::GENESIS,
        &config(sign, fsync),
        "start",
        None,
        None,
    )
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Start + groups of 4 and 2 + stop, batch signing.
fn grouped_log(path: &Path) {
    let mut w = file_writer(path, SignPolicy::Batch, FsyncPolicy::Batch);
    let mut slots = Vec::new();
    w.commit(&[], false, &mut slots).unwrap(); // start: line 1
    let group: Vec<_> = (0..4).map(finding).collect();
    w.commit(&group, false, &mut slots).unwrap(); // lines 2-5
    assert!(matches!(
        slots[..],
        [Slot::Seq(1), Slot::Seq(2), Slot::Seq(3), Slot::Seq(4)]
    ));
    w.commit(&group[..2], false, &mut slots).unwrap(); // lines 6-7
    assert_eq!(w.commit(&[], true, &mut slots).unwrap(), Some(8)); // stop: line 8
}

#[test]
fn batch_signs_last_line_of_each_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    grouped_log(&path);
    let signed: Vec<bool> = lines(&path).iter().map(|v| !v["sig"].is_null()).collect();
    assert_eq!(signed, [true, false, false, false, true, false, true, true]);
    let report = verify(&[path], None, false).unwrap();
    assert_eq!(report.entries, 8);
    assert!(report.closed);
}

#[test]
fn each_signs_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut w = file_writer(&path, SignPolicy::Each, FsyncPolicy::Always);
    let mut slots = Vec::new();
    let group: Vec<_> = (0..5).map(finding).collect();
    w.commit(&group, false, &mut slots).unwrap();
    w.commit(&[], true, &mut slots).unwrap();
    assert!(lines(&path).iter().all(|v| v["sig"].is_string()));
    assert_eq!(verify(&[path], None, false).unwrap().entries, 7);
}

#[test]
fn edited_unsigned_line_is_blamed_on_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    grouped_log(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    // Line 3 is unsigned; its next line's prev (proven by line 5's
    // signature) names the original.
    let edited = text.replacen("host1.example", "host1.exampme", 1);
    std::fs::write(&path, edited).unwrap();
    let err = verify(std::slice::from_ref(&path), None, false).unwrap_err();
    assert_eq!((err.line, err.fault), (3, Fault::Altered));
}

#[test]
fn cut_inside_a_group_leaves_unsigned_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    grouped_log(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text.lines().take(4).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let err = verify(std::slice::from_ref(&path), None, true).unwrap_err();
    assert_eq!(
        (err.line, err.fault),
        (2, Fault::UnsignedTail { first_unsigned_line: 2 })
    );
}

#[test]
fn too_large_finding_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jsonl");
    let mut w = file_writer(&path, SignPolicy::Batch, FsyncPolicy::Batch);
    let mut slots = Vec::new();
    let huge = finding(9).with_detail("x".repeat(crate::MAX_LINE));
    // The refused finding is last: the line before it must get the signature.
    let group = vec![finding(0), finding(1), huge];
    w.commit(&group, false, &mut slots).unwrap();
    assert!(matches!(
        slots[..],
        [
            Slot::Seq(1),
            Slot::Seq(2),
            Slot::Refused(AuditError::EntryTooLarge { .. })
        ]
    ));
    w.commit(&[], true, &mut slots).unwrap();
    let signed: Vec<bool> = lines(&path).iter().map(|v| !v["sig"].is_null()).collect();
    assert_eq!(signed, [true, false, true, true]);
    verify(&[path], None, false).unwrap();
}

/// Called by [`Flaky::append`] after the bytes are in.
type Hook = Arc<Mutex<Option<Box<dyn Fn() + Send>>>>;

/// In-memory storage whose writes or syncs fail on demand.
#[derive(Clone, Default)]
struct Flaky {
    data: Arc<Mutex<Vec<u8>>>,
    fail_write: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    panic_write: Arc<AtomicBool>,
    after_append: Hook,
    /// The thread of every rotation (which this storage refuses).
    rotated_on: Arc<Mutex<Vec<String>>>,
    /// Background syncs run.
    syncs: Arc<std::sync::atomic::AtomicUsize>,
    committed: u64,
}

impl Storage for Flaky {
    fn committed_len(&self) -> u64 {
        self.committed
    }
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        assert!(!self.panic_write.load(Ordering::SeqCst), "injected panic");
        {
            let mut data = self.data.lock().unwrap();
            if self.fail_write.load(Ordering::SeqCst) {
                // A partial write, as a full disk would leave it.
                data.extend_from_slice(&bytes[..bytes.len() / 2]);
                return Err(io::Error::other("disk full"));
            }
            data.extend_from_slice(bytes);
        }
        if let Some(hook) = &*self.after_append.lock().unwrap() {
            hook();
        }
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::other("sync failed"));
        }
        Ok(())
    }
    fn commit(&mut self) {
        self.committed = self.data.lock().unwrap().len() as u64;
    }
    fn rollback(&mut self) -> io::Result<()> {
        self.data.lock().unwrap().truncate(self.committed as usize);
        Ok(())
    }
    fn rollback_to(&mut self, len: u64) -> io::Result<()> {
        self.committed = len;
        self.rollback()
    }
    fn sync_handle(&mut self) -> io::Result<crate::storage::SyncFn> {
        let fail = Arc::clone(&self.fail_sync);
        let syncs = Arc::clone(&self.syncs);
        Ok(Arc::new(move || {
            syncs.fetch_add(1, Ordering::SeqCst);
            if fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("sync failed"));
            }
            Ok(())
        }))
    }
    fn rotate(&mut self) -> io::Result<()> {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        self.rotated_on.lock().unwrap().push(thread);
        Err(io::Error::other("no rotation in memory"))
    }
    fn path(&self) -> &Path {
        Path::new("memory")
    }
}

fn flaky_writer(storage: Flaky, fsync: FsyncPolicy) -> Writer<Flaky> {
    rotating_writer(storage, fsync, 0)
}

fn rotating_writer(storage: Flaky, fsync: FsyncPolicy, rotate_bytes: u64) -> Writer<Flaky> {
    let config = AuditConfig {
        rotate_bytes,
        ..config(SignPolicy::Batch, fsync)
    };
    Writer::new(
        storage,
        Encoder::new(key(), "test".to_owned()),
        ChainHead::GENESIS,
        &config,
        "start",
        None,
        None,
    )
}

fn verify_bytes(bytes: &[u8]) -> Result<crate::VerifyReport, crate::VerifyError> {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("m.jsonl");
    std::fs::write(&path, bytes).unwrap();
    verify(&[path], None, false)
}

#[test]
fn failed_groups_are_rolled_back() {
    for fsync in [FsyncPolicy::Batch, FsyncPolicy::Always] {
        let storage = Flaky::default();
        let mut w = flaky_writer(storage.clone(), fsync);
        let mut slots = Vec::new();
        let group: Vec<_> = (0..3).map(finding).collect();
        w.commit(&group, false, &mut slots).unwrap();
        let good = storage.data.lock().unwrap().len();

        storage.fail_write.store(true, Ordering::SeqCst);
        assert!(w.commit(&group, false, &mut slots).is_err());
        assert_eq!(storage.data.lock().unwrap().len(), good);
        storage.fail_write.store(false, Ordering::SeqCst);

        storage.fail_sync.store(true, Ordering::SeqCst);
        assert!(w.commit(&group, false, &mut slots).is_err());
        assert_eq!(storage.data.lock().unwrap().len(), good);
        // A failed close leaves the log open.
        assert!(w.commit(&[], true, &mut slots).is_err());
        storage.fail_sync.store(false, Ordering::SeqCst);

        // The chain continued from the last good line: seq 4 follows 3.
        w.commit(&group, false, &mut slots).unwrap();
        assert!(matches!(slots[0], Slot::Seq(4)));
        assert_eq!(w.commit(&[], true, &mut slots).unwrap(), Some(8));
        let report = verify_bytes(&storage.data.lock().unwrap()).unwrap();
        assert_eq!(report.entries, 8);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_fails_while_storage_fails() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch)).unwrap();
    assert_eq!(log.append(finding(0)).await.unwrap(), 1);
    storage.fail_write.store(true, Ordering::SeqCst);
    let err = log.append(finding(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    storage.fail_write.store(false, Ordering::SeqCst);
    assert_eq!(log.append(finding(2)).await.unwrap(), 2);
    assert_eq!(log.close().await.unwrap(), 4);
    assert!(matches!(log.append(finding(3)).await, Err(AuditError::Closed)));
    assert!(matches!(log.close().await, Err(AuditError::Closed)));
    verify_bytes(&storage.data.lock().unwrap()).unwrap();
}

#[test]
fn open_fails_when_start_cannot_be_written() {
    let storage = Flaky::default();
    storage.fail_write.store(true, Ordering::SeqCst);
    let err = AuditLog::spawn(flaky_writer(storage, FsyncPolicy::Batch)).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_background_sync_stops_the_log_for_good() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch)).unwrap();
    assert_eq!(log.append(finding(0)).await.unwrap(), 1);
    storage.fail_sync.store(true, Ordering::SeqCst);
    // fsync=batch answers once the line is written, so the append that
    // meets the failing disk first succeeds; its background sync fails and
    // from then on every append fails.
    let mut answered = vec![1];
    let mut failed = 0;
    for i in 1..200 {
        match log.append(finding(i)).await {
            Ok(seq) if failed == 0 => answered.push(seq),
            Ok(seq) => panic!("seq {seq} answered after a failed sync"),
            Err(e) => {
                assert!(e.to_string().contains("sync"), "{e}");
                failed += 1;
                if failed == 5 {
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(failed, 5, "appends kept succeeding while every sync failed");
    // A sync that works again proves nothing about the lost writeback:
    // the log stays shut until a restart.
    storage.fail_sync.store(false, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(log.append(finding(999)).await.is_err());
    assert!(log.close().await.is_err());
    // Nothing answered was taken back, nothing refused was left behind.
    let data = String::from_utf8(storage.data.lock().unwrap().clone()).unwrap();
    let seqs: Vec<u64> = data
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let expected: Vec<u64> = (0..=*answered.last().unwrap()).collect();
    assert_eq!(seqs, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_whose_sync_fails_leaves_no_stop_and_can_be_retried() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch)).unwrap();
    assert_eq!(log.append(finding(0)).await.unwrap(), 1);
    // Let the background sync of that line happen first.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    storage.fail_sync.store(true, Ordering::SeqCst);
    assert!(log.close().await.is_err());
    assert!(!String::from_utf8_lossy(&storage.data.lock().unwrap()).contains("\"stop\""));
    storage.fail_sync.store(false, Ordering::SeqCst);
    assert_eq!(log.close().await.unwrap(), 3);
    let report = verify_bytes(&storage.data.lock().unwrap()).unwrap();
    assert_eq!(report.entries, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_appends_are_not_logged() {
    let storage = Flaky::default();
    let mut writer = flaky_writer(storage.clone(), FsyncPolicy::Batch);
    // Write the start entry now, then queue requests before the thread runs.
    writer.commit(&[], false, &mut Vec::new()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (keep, kept) = tokio::sync::oneshot::channel();
    let (gone, cancelled) = tokio::sync::oneshot::channel();
    drop(cancelled);
    tx.send(crate::writer::Request::Append(finding(1), gone)).await.unwrap();
    tx.send(crate::writer::Request::Append(finding(2), keep)).await.unwrap();
    let (close, closed) = tokio::sync::oneshot::channel();
    tx.send(crate::writer::Request::Close(close)).await.unwrap();
    let pipe = writer.pipe();
    std::thread::spawn(move || crate::pipe::sync_loop(pipe, Arc::default()));
    let writer = Arc::new(std::sync::Mutex::new(writer));
    std::thread::spawn(move || crate::writer::run(writer, rx));
    assert_eq!(kept.await.unwrap().unwrap(), 1);
    assert_eq!(closed.await.unwrap().unwrap(), 3);
    let text = String::from_utf8(storage.data.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("host1.example") && text.contains("host2.example"));
    verify_bytes(text.as_bytes()).unwrap();
}

/// Retries `try_append_now` until the writer thread is free (it is idle
/// between groups; a test has nothing else running).
fn append_now(log: &AuditLog, findings: &[AuditFinding]) -> Vec<Result<u64, AuditError>> {
    for _ in 0..1000 {
        if let Some(appended) = log.try_append_now(findings) {
            return appended.into_results();
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the writer never became free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_groups_interleave_with_the_writer_thread_and_verify() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch)).unwrap();
    assert_eq!(log.append(finding(0)).await.unwrap(), 1);
    let group: Vec<_> = (1..4).map(finding).collect();
    let seqs: Vec<u64> = append_now(&log, &group).into_iter().map(Result::unwrap).collect();
    assert_eq!(seqs, [2, 3, 4]);
    assert_eq!(log.append(finding(4)).await.unwrap(), 5);
    // One group, one signature: on its last line only.
    let data = String::from_utf8(storage.data.lock().unwrap().clone()).unwrap();
    let signed: Vec<bool> = data
        .lines()
        .map(|l| !serde_json::from_str::<serde_json::Value>(l).unwrap()["sig"].is_null())
        .collect();
    assert_eq!(signed, [true, true, false, false, true, true]);
    assert_eq!(log.close().await.unwrap(), 7);
    verify_bytes(&storage.data.lock().unwrap()).unwrap();
    // Closed: nothing more, inline or not.
    assert!(matches!(append_now(&log, &group)[..], [Err(AuditError::Closed), _, _]));
}

fn line_count(storage: &Flaky) -> usize {
    storage
        .data
        .lock()
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_groups_fail_and_leave_nothing_after_a_failed_sync() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch)).unwrap();
    storage.fail_sync.store(true, Ordering::SeqCst);
    // The first groups are written and answered; once a background sync
    // has failed, every group fails and leaves nothing behind.
    let mut ok = 0;
    while matches!(append_now(&log, &[finding(ok)])[..], [Ok(_)]) {
        ok += 1;
        assert!(ok < 200, "inline appends kept succeeding while every sync failed");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(ok >= 1);
    storage.fail_sync.store(false, Ordering::SeqCst);
    for i in 0..5 {
        let results = append_now(&log, &[finding(1000 + i)]);
        assert!(matches!(&results[..], [Err(e)] if e.to_string().contains("sync")));
    }
    assert_eq!(line_count(&storage), 1 + ok, "a refused group left lines behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_group_written_as_a_sync_fails_is_taken_back() {
    let storage = Flaky::default();
    let writer = flaky_writer(storage.clone(), FsyncPolicy::Batch);
    let pipe = writer.pipe();
    let log = AuditLog::spawn(writer).unwrap();
    // The sync fails between this group's write and its hand-over.
    *storage.after_append.lock().unwrap() = Some(Box::new(move || pipe.poison()));
    let results = append_now(&log, &[finding(1), finding(2)]);
    assert!(matches!(&results[..], [Err(_), Err(_)]), "{results:?}");
    assert_eq!(line_count(&storage), 1, "only the start entry stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_groups_leave_rotation_to_the_writer_thread() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(rotating_writer(storage.clone(), FsyncPolicy::Batch, 4096)).unwrap();
    for i in 0..40 {
        match log.try_append_now(&[finding(i)]) {
            Some(results) => assert!(matches!(results[..], [Ok(_)])),
            None => _ = log.append(finding(i)).await.unwrap(),
        }
    }
    assert_eq!(*storage.rotated_on.lock().unwrap(), ["secureops-audit"]);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_committing_stops_the_log() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch)).unwrap();
    assert_eq!(log.append(finding(0)).await.unwrap(), 1);
    storage.panic_write.store(true, Ordering::SeqCst);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| append_now(&log, &[finding(1)])));
    assert!(panicked.is_err());
    storage.panic_write.store(false, Ordering::SeqCst);
    // The chain head may be ahead of the file: nothing more is written.
    assert!(matches!(
        log.try_append_now(&[finding(2)]).as_deref(),
        Some([Err(AuditError::WriterGone)])
    ));
    assert!(log.append(finding(3)).await.is_err());
    assert!(log.close().await.is_err());
    assert_eq!(line_count(&storage), 2);
}

#[tokio::test]
async fn inline_is_declined_with_fsync_always() {
    let log = AuditLog::spawn(flaky_writer(Flaky::default(), FsyncPolicy::Always)).unwrap();
    assert!(log.try_append_now(&[finding(1)]).is_none());
    assert_eq!(log.append(finding(1)).await.unwrap(), 1);
}

/// Appends `findings` on this thread, keeping the [`crate::Appended`].
async fn hold_now(log: &AuditLog, findings: &[AuditFinding]) -> crate::Appended {
    for _ in 0..1000 {
        if let Some(appended) = log.try_append_now(findings) {
            return appended;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the writer never became free");
}

/// Waits until `storage` has seen `n` background syncs.
fn wait_for_syncs(storage: &Flaky, n: usize) {
    for _ in 0..2000 {
        if storage.syncs.load(Ordering::SeqCst) >= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the syncer was never woken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_syncer_is_woken_only_once_the_inline_group_is_let_go() {
    let storage = Flaky::default();
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch)).unwrap();
    // A first group and its sync, so that the syncer (which may have
    // started after that group was queued) is now waiting for work.
    drop(hold_now(&log, &[finding(1)]).await);
    wait_for_syncs(&storage, 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let appended = hold_now(&log, &[finding(2)]).await;
    assert!(matches!(appended[..], [Ok(_)]));
    // Held (the answers are still being sent): the idle syncer sleeps on.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(storage.syncs.load(Ordering::SeqCst), 1, "woken before the answers");
    drop(appended);
    wait_for_syncs(&storage, 2);
    log.close().await.unwrap();
}

/// Counts what an observer is told, by host.
#[derive(Debug, Default)]
struct Seen(Mutex<Vec<String>>);

impl crate::AuditObserver for Seen {
    fn recorded(&self, finding: &AuditFinding) {
        self.0.lock().unwrap().push(finding.host.clone().unwrap_or_default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_sees_exactly_the_findings_that_are_in_the_log() {
    let storage = Flaky::default();
    let seen = Arc::new(Seen::default());
    let log = AuditLog::spawn(flaky_writer(storage.clone(), FsyncPolicy::Batch))
        .unwrap()
        .with_observer(Arc::clone(&seen) as Arc<dyn crate::AuditObserver>);
    let clone = log.clone();
    clone.append(finding(0)).await.unwrap();
    append_now(&log, &[finding(1), finding(2)]);
    // A failed append is not in the log: the observer is not told.
    storage.fail_write.store(true, Ordering::SeqCst);
    assert!(log.append(finding(3)).await.is_err());
    storage.fail_write.store(false, Ordering::SeqCst);
    log.append(finding(4)).await.unwrap();
    log.close().await.unwrap();
    let hosts = seen.0.lock().unwrap().clone();
    assert_eq!(
        hosts,
        ["host0.example", "host1.example", "host2.example", "host4.example"]
    );
    let data = String::from_utf8(storage.data.lock().unwrap().clone()).unwrap();
    assert!(!data.contains("host3.example"));
}
