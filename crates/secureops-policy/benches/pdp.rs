//! `Allowlist::find` at 10, 1 000 and 100 000 mixed rules: the cost of a
//! decision must not grow with the rule count.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ipnet::Ipv4Net;
use secureops_policy::{Allowlist, Host, Rule, RuleHost, normalize_host};

const SIZES: [usize; 3] = [10, 1_000, 100_000];
const PREFIXES: [u8; 5] = [16, 20, 24, 28, 32];

/// A third each of exact names, wildcards and IPv4 CIDRs of mixed lengths.
fn rules(n: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let text = match i % 3 {
                0 => format!("host{i}.svc{}.example.com", i % 97),
                1 => format!("*.tenant{i}.apps.example.net:8443"),
                _ => {
                    let addr = Ipv4Addr::from_bits((i as u32).wrapping_mul(2_654_435_761));
                    let len = PREFIXES[(i / 3) % PREFIXES.len()];
                    format!("{}:*", Ipv4Net::new(addr, len).unwrap().trunc())
                }
            };
            text.parse().unwrap()
        })
        .collect()
}

fn find(c: &mut Criterion) {
    let mut group = c.benchmark_group("find");
    for n in SIZES {
        let list = Allowlist::from_rules(rules(n));
        let exact = normalize_host("host0.svc0.example.com").unwrap();
        let wildcard = normalize_host("a.b.c.tenant1.apps.example.net").unwrap();
        let miss = normalize_host("x.y.z.nowhere.example.org").unwrap();
        let Some(RuleHost::Cidr(net)) = list.rules().get(2).map(|r| &r.host) else {
            panic!("rule 2 is a CIDR");
        };
        let ip = Host::Ip(net.hosts().last().unwrap_or(net.network()));
        let cases: [(&str, &Host, u16); 4] = [
            ("exact_hit", &exact, 443),
            ("wildcard_hit_depth3", &wildcard, 8443),
            ("miss", &miss, 443),
            ("cidr_hit", &ip, 5432),
        ];
        for (name, host, port) in cases {
            assert_eq!(list.find(host, port).is_some(), name != "miss", "{name} at {n}");
            group.bench_with_input(BenchmarkId::new(name, n), &(host, port), |b, &(h, p)| {
                b.iter(|| list.find(black_box(h), black_box(p)).is_some());
            });
        }
    }
    group.finish();
}

fn normalize(c: &mut Criterion) {
    c.bench_function("normalize_host", |b| {
        b.iter(|| normalize_host(black_box("A.B.C.Tenant1.Apps.Example.NET.")));
    });
}

criterion_group!(benches, find, normalize);
criterion_main!(benches);
