//! Shared helpers for the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use secureops_audit::{AuditConfig, AuditFinding, AuditLog, FsyncPolicy, Kind, SignPolicy, Verdict, Via};

pub fn config(dir: &Path, sign: SignPolicy, fsync: FsyncPolicy) -> AuditConfig {
    AuditConfig {
        sign,
        fsync,
        version: "0.0.0-test".to_owned(),
        ..AuditConfig::new(dir.join("audit.jsonl"), dir.join("audit.key"))
    }
}

pub fn finding(i: u64) -> AuditFinding {
    let f = if i.is_multiple_of(3) {
        AuditFinding::new(Kind::Dns, Verdict::Deny, "not in allowlist")
            .with_host(format!("h{i}.example."))
            .with_via(Via::Dns)
            .with_qtype("AAAA")
    } else {
        AuditFinding::new(Kind::Egress, Verdict::Allow, "rule github.com")
            .with_host(format!("h{i}.github.com"))
            .with_port(443)
            .with_via(Via::HostHeader)
            .with_status(200)
    };
    // Strings that need escaping must stay canonical.
    f.with_process(Some(1000 + i as u32), Some("/usr/bin/cu\"rl\u{7}é".to_owned()))
        .with_detail(format!("tab\there {i}"))
}

/// Appends `tasks * per_task` findings from concurrent tasks, then closes.
/// Returns the seqs the appends got.
pub async fn fill(log: &AuditLog, tasks: u64, per_task: u64) -> Vec<u64> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..per_task {
                seqs.push(log.append(finding(t * per_task + i)).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_unstable();
    all
}

/// A closed log with `n` findings, written by 8 concurrent tasks.
pub fn make_log(dir: &Path, sign: SignPolicy, n: u64) -> PathBuf {
    let cfg = config(dir, sign, FsyncPolicy::Batch);
    let path = cfg.path.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let log = AuditLog::open(cfg).unwrap();
        fill(&log, 8, n / 8).await;
        log.close().await.unwrap();
    });
    path
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

pub fn is_signed(line: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    !v["sig"].is_null()
}
