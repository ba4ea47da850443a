//! Hot-path parsing: the SNI of a ~2 KB (post-quantum sized) ClientHello
//! split over two records, and a CONNECT / absolute-form request head.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use secureops_proxy::peek::http_head::parse_request;
use secureops_proxy::peek::tls_sni::parse_sni;
use std::hint::black_box;

fn client_hello(sni: &str, pad: usize, record: usize) -> Vec<u8> {
    let mut exts = Vec::new();
    let n = sni.len() as u16;
    exts.extend_from_slice(&0u16.to_be_bytes());
    exts.extend_from_slice(&(n + 5).to_be_bytes());
    exts.extend_from_slice(&(n + 3).to_be_bytes());
    exts.push(0);
    exts.extend_from_slice(&n.to_be_bytes());
    exts.extend_from_slice(sni.as_bytes());
    exts.extend_from_slice(&0x0015u16.to_be_bytes());
    exts.extend_from_slice(&(pad as u16).to_be_bytes());
    exts.extend(std::iter::repeat_n(0u8, pad));
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in msg.chunks(record) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn bench(c: &mut Criterion) {
    let hello = client_hello("objects.githubusercontent.com", 1800, 1400);
    c.bench_function("sni/2KB-hello-2-records", |b| b.iter(|| parse_sni(black_box(&hello))));
    let connect = b"CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\nUser-Agent: curl/7.88.1\r\nProxy-Connection: Keep-Alive\r\n\r\n";
    c.bench_function("head/connect", |b| b.iter(|| parse_request(black_box(connect))));
    let get = b"GET http://deb.debian.org/debian/dists/bookworm/InRelease HTTP/1.1\r\nHost: deb.debian.org\r\nUser-Agent: Debian APT-HTTP/1.3\r\nAccept: */*\r\nCache-Control: max-age=0\r\n\r\n";
    c.bench_function("head/absolute-get", |b| b.iter(|| parse_request(black_box(get))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
