//! One audit entry: canonical JSON + chain hash, with and without its
//! ed25519 signature (sign=batch pays the signature once per group, so a
//! group of n entries costs n × unsigned + 1 × (signed − unsigned)).
//!
//! `cargo bench -p secureops-audit --bench encode`
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use secureops_audit::bench::Lines;
use secureops_audit::{AuditFinding, Kind, Verdict, Via};

fn encode(c: &mut Criterion) {
    let finding = AuditFinding::new(Kind::Egress, Verdict::Allow, "allowed by rule \"*.github.com:443\"")
        .with_host("objects.githubusercontent.com")
        .with_port(443)
        .with_via(Via::Connect)
        .with_process(Some(4242), Some("/usr/bin/git-remote-https".to_owned()))
        .with_status(200);
    let mut lines = Lines::new();
    for (name, sign) in [("entry/unsigned", false), ("entry/signed", true)] {
        c.bench_function(name, |b| {
            b.iter(|| {
                lines.out.clear();
                black_box(lines.push(black_box(&finding), sign))
            })
        });
    }
}

criterion_group!(benches, encode);
criterion_main!(benches);
