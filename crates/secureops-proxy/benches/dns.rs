//! The sinkhole's per-query work, without sockets: decode and check a
//! query, and build and encode the sinkhole (NXDOMAIN) and `[dns] hosts`
//! answers. The query is what `dig` sends (EDNS, a cookie-less OPT).
//!
//! `cargo bench -p secureops-proxy --bench dns`
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use secureops_proxy::dns::bench;

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m.to_vec().unwrap()
}

fn dns(c: &mut Criterion) {
    let denied = query("c2VjcmV0LXRva2VuLTEyMzQ1Njc4OTA.exfil.attacker.example.");
    let allowed = query("objects.githubusercontent.com.");
    let ips: Vec<IpAddr> = vec!["198.18.0.10".parse().unwrap(), "198.18.0.11".parse().unwrap()];
    assert!(bench::decode(&denied) && bench::decode(&allowed));
    c.bench_function("dns/decode", |b| b.iter(|| bench::decode(black_box(&denied))));
    c.bench_function("dns/sinkhole-answer", |b| {
        b.iter(|| bench::sinkhole_answer(black_box(&denied)))
    });
    c.bench_function("dns/static-answer", |b| {
        b.iter(|| bench::static_answer(black_box(&allowed), black_box(&ips)))
    });
}

criterion_group!(benches, dns);
criterion_main!(benches);
