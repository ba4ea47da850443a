//! Append throughput: 64 concurrent appenders on a multi-thread runtime, for
//! each fsync × sign policy, log file in a temporary folder, its anchor
//! kept up to date in another (as the guard runs it).
//!
//! `cargo bench -p secureops-audit --bench append -- --warm-up-time 1 --measurement-time 2`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secureops_audit::{AuditConfig, AuditFinding, AuditLog, FsyncPolicy, Kind, SignPolicy, Verdict, Via};

const TASKS: u64 = 64;

fn finding(i: u64) -> AuditFinding {
    AuditFinding::new(Kind::Egress, Verdict::Deny, "not in allowlist")
        .with_host(format!("h{}.attacker.example", i % 1000))
        .with_port(443)
        .with_via(Via::Connect)
        .with_process(Some(4242), Some("/usr/bin/curl".to_owned()))
        .with_status(403)
}

/// Appends `total` findings from `TASKS` tasks; returns the elapsed time.
async fn run(log: &AuditLog, total: u64) -> Duration {
    let per_task = total.div_ceil(TASKS);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(TASKS as usize);
    for t in 0..TASKS {
        let log = log.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                log.append(finding(t * per_task + i)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    start.elapsed()
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("append_64_tasks");
    group.throughput(Throughput::Elements(1));
    for fsync in [FsyncPolicy::Batch, FsyncPolicy::Always] {
        for sign in [SignPolicy::Batch, SignPolicy::Each] {
            let name = format!("fsync={fsync:?},sign={sign:?}").to_lowercase();
            let config = AuditConfig {
                fsync,
                sign,
                version: "bench".to_owned(),
                anchor_dir: Some(dir.path().join("anchors")),
                ..AuditConfig::new(dir.path().join(format!("{name}.jsonl")), dir.path().join("k.key"))
            };
            let log = AuditLog::open(config).unwrap();
            group.bench_function(&name, |b| {
                b.iter_custom(|iters| rt.block_on(run(&log, iters)));
            });
            rt.block_on(log.close()).unwrap();
        }
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
