//! Writing logs through the public API: round trip, policies, keys,
//! restarts, rotation, failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use common::{config, fill, finding, read_lines};
use secureops_audit::{AuditError, AuditLog, Fault, FsyncPolicy, SignPolicy, generate_key, load_public_key, verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    let path = cfg.path.clone();
    let log = AuditLog::open(cfg).unwrap();
    let seqs = fill(&log, 64, 40).await;
    // Every append got its own seq; start is 0.
    assert_eq!(seqs, (1..=2560).collect::<Vec<u64>>());
    assert_eq!(log.close().await.unwrap(), 2562);

    let report = verify(std::slice::from_ref(&path), None, false).unwrap();
    assert_eq!(report.entries, 2562);
    assert!(report.closed);
    assert!(!report.key_pinned);
    assert_eq!(report.fingerprint, log.fingerprint());

    let lines = read_lines(&path);
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], i as u64);
        // Canonical: parse and re-serialise gives the same bytes.
        assert_eq!(serde_json::to_string(&v).unwrap(), *line);
    }
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["kind"], "start");
    assert_eq!(first["prev"], "0".repeat(64));
    assert_eq!(first["fingerprint"], log.fingerprint());
    assert_eq!(first["version"], "0.0.0-test");
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["count"].as_u64()),
        (Some("stop"), Some(2562))
    );
}

#[test]
fn line_shape_is_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::make_log(dir.path(), SignPolicy::Each, 8);
    let lines = read_lines(&path);
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "decision", "exe", "host", "kind", "pid", "port", "prev", "reason", "seq", "sig", "ts", "via",
    ] {
        assert!(keys.contains(&k), "{k} missing in {}", lines[1]);
    }
    let ts = v["ts"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
    // Keys are in byte order in the raw line.
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    // prev is sha256 of the previous line's bytes.
    use sha2::Digest as _;
    assert_eq!(v["prev"], hex::encode(sha2::Sha256::digest(lines[0].as_bytes())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_leaves_unsigned_lines_all_covered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    let path = cfg.path.clone();
    let log = AuditLog::open(cfg).unwrap();
    fill(&log, 64, 50).await;
    log.close().await.unwrap();
    let lines = read_lines(&path);
    let unsigned = lines.iter().filter(|l| !common::is_signed(l)).count();
    assert!(unsigned > 0, "64 concurrent appenders should form groups");
    assert!(common::is_signed(&lines[0]) && common::is_signed(lines.last().unwrap()));
    verify(&[path], None, false).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_signs_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Each, FsyncPolicy::Always);
    let path = cfg.path.clone();
    let log = AuditLog::open(cfg).unwrap();
    fill(&log, 16, 10).await;
    log.close().await.unwrap();
    assert!(read_lines(&path).iter().all(|l| common::is_signed(l)));
    assert_eq!(verify(&[path], None, false).unwrap().entries, 162);
}

#[test]
fn generate_key_writes_private_0600_and_pub() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let fp = generate_key(&key).unwrap();
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let text = fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
    let pub_path = dir.path().join("k.key.pub");
    assert!(
        fs::read_to_string(&pub_path)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let public = load_public_key(&pub_path).unwrap();
    assert_eq!(secureops_audit::fingerprint_of(&public), fp);
    // Never overwrite.
    assert!(matches!(generate_key(&key), Err(AuditError::AlreadyExists { .. })));
    assert_eq!(fs::read_to_string(&key).unwrap(), text);
}

#[test]
fn open_refuses_world_readable_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    generate_key(&cfg.signing_key).unwrap();
    fs::set_permissions(&cfg.signing_key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditLog::open(cfg.clone()).unwrap_err();
    let shown = cfg.signing_key.display().to_string();
    assert_eq!(
        err.to_string(),
        format!("permissions 0644 for '{shown}' are too open; run: chmod 600 {shown}")
    );
    assert!(!cfg.path.exists(), "nothing is logged with a refused key");
}

#[tokio::test]
async fn open_creates_missing_key_0600() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    let log = AuditLog::open(cfg.clone()).unwrap();
    assert_eq!(
        fs::metadata(&cfg.signing_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::metadata(&cfg.path).unwrap().permissions().mode() & 0o777, 0o600);
    let public = load_public_key(&dir.path().join("audit.key.pub")).unwrap();
    assert_eq!(secureops_audit::fingerprint_of(&public), log.fingerprint());
    log.close().await.unwrap();
    let report = verify(&[cfg.path], Some(&public), false).unwrap();
    assert!(report.key_pinned);
    assert_eq!(report.entries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    let log = AuditLog::open(cfg.clone()).unwrap();
    fill(&log, 4, 5).await;
    assert_eq!(log.close().await.unwrap(), 22);

    // Second run, killed without close: no stop entry.
    let log = AuditLog::open(cfg.clone()).unwrap();
    assert_eq!(log.append(finding(1)).await.unwrap(), 23);
    drop(log);
    let err = verify(std::slice::from_ref(&cfg.path), None, false).unwrap_err();
    assert_eq!((err.line, err.fault), (24, Fault::NotClosed));
    assert!(verify(std::slice::from_ref(&cfg.path), None, true).is_ok());

    // Third run notes the missing stop and closes properly.
    let log = AuditLog::open(cfg.clone()).unwrap();
    assert_eq!(log.close().await.unwrap(), 26);
    let lines = read_lines(&cfg.path);
    let restart: serde_json::Value = serde_json::from_str(&lines[24]).unwrap();
    assert_eq!(restart["kind"], "start");
    assert_eq!(restart["reason"], "restart");
    assert!(restart["detail"].as_str().unwrap().contains("without a stop entry"));
    assert_eq!(verify(&[cfg.path], None, false).unwrap().entries, 26);
}

#[tokio::test]
async fn restart_moves_torn_tail_aside() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    let log = AuditLog::open(cfg.clone()).unwrap();
    log.append(finding(1)).await.unwrap();
    drop(log);
    // Simulate a write cut short by a crash.
    let mut bytes = fs::read(&cfg.path).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(b"{\"count\":null,\"deci");
    fs::write(&cfg.path, &bytes).unwrap();
    let err = verify(std::slice::from_ref(&cfg.path), None, true).unwrap_err();
    assert_eq!((err.line, err.fault), (3, Fault::TornLastLine));

    let log = AuditLog::open(cfg.clone()).unwrap();
    log.close().await.unwrap();
    let torn = fs::read(dir.path().join("audit.jsonl.torn")).unwrap();
    assert_eq!(torn, b"{\"count\":null,\"deci\n");
    assert!(fs::read(&cfg.path).unwrap().len() > good);
    let lines = read_lines(&cfg.path);
    assert!(lines[2].contains("moved a torn last line of 19 bytes"), "{}", lines[2]);
    // start, finding, restart, stop
    assert_eq!(verify(&[cfg.path], None, false).unwrap().entries, 4);
}

#[tokio::test]
async fn restart_with_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    AuditLog::open(cfg.clone()).unwrap().close().await.unwrap();
    let mut other = cfg.clone();
    other.signing_key = dir.path().join("other.key");
    let err = AuditLog::open(other).unwrap_err();
    assert!(matches!(err, AuditError::Resume { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
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
    assert!(files.len() >= 3, "expected several rotations, got {files:?}");
    for f in &files {
        assert!(fs::metadata(f).unwrap().len() <= 4000 + 1000, "{f:?} too large");
    }
    files.push(cfg.path.clone());
    let report = verify(&files, None, false).unwrap();
    assert_eq!(report.entries, count);
    // A later file alone is not a whole series.
    let err = verify(&files[1..2], None, false).unwrap_err();
    assert!(matches!(err.fault, Fault::SeqGap { expected: 0, .. }), "{err}");
    // Files out of order fail at the first line of the misplaced file.
    let swapped = [files[1].clone(), files[0].clone()];
    assert!(verify(&swapped, None, true).is_err());

    // A restart after rotation continues in the current file.
    let log = AuditLog::open(cfg.clone()).unwrap();
    log.append(finding(99)).await.unwrap();
    log.close().await.unwrap();
    verify(&files, None, false).unwrap();
}

#[test]
fn open_fails_when_the_log_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    cfg.path = PathBuf::from("/dev/full");
    match fs::OpenOptions::new().append(true).open(&cfg.path) {
        Ok(_) => {
            let err = AuditLog::open(cfg).unwrap_err();
            assert!(matches!(err, AuditError::Io { .. }), "{err}");
        }
        Err(e) => eprintln!("skipped: cannot open /dev/full for append: {e}"),
    }
    cfg = config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch);
    cfg.path = dir.path().join("no/such/dir/audit.jsonl");
    assert!(matches!(AuditLog::open(cfg), Err(AuditError::Io { .. })));
}

#[tokio::test]
async fn closed_log_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(config(dir.path(), SignPolicy::Batch, FsyncPolicy::Batch)).unwrap();
    let other = log.clone();
    assert_eq!(log.close().await.unwrap(), 2);
    assert!(matches!(other.append(finding(0)).await, Err(AuditError::Closed)));
    assert!(matches!(other.close().await, Err(AuditError::Closed)));
}

#[test]
fn config_parses_from_audit_table() {
    let cfg: secureops_audit::AuditConfig =
        serde_json::from_str(r#"{"path":"a.jsonl","fsync":"always","sign":"each"}"#).unwrap();
    assert_eq!(cfg.fsync, FsyncPolicy::Always);
    assert_eq!(cfg.sign, SignPolicy::Each);
    assert_eq!(cfg.signing_key, PathBuf::from("secureops-audit.key"));
    assert!(!cfg.version.is_empty());
    assert!(serde_json::from_str::<secureops_audit::AuditConfig>(r#"{"bogus":1}"#).is_err());
}
