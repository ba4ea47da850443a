//! Attribution cost per connection: socket → pid/exe/detail through
//! `/proc`, as the proxy does it for every client connection when process
//! context is on. Prints p50/p99/max over 1 000 lookups with 64 open
//! loopback connections (plain harness: criterion reports no percentiles).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use secureops_proxy::attribution::ProcNet;

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let clients: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(server).unwrap()).collect();
    let accepted: Vec<TcpStream> = (0..64).map(|_| listener.accept().unwrap().0).collect();
    for (label, net) in [
        ("fresh ProcNet (cold hash cache)", None),
        ("shared ProcNet (warm)", Some(ProcNet::own())),
    ] {
        let mut times: Vec<Duration> = Vec::with_capacity(1000);
        for i in 0..1000 {
            let c = &clients[i % clients.len()];
            let started = Instant::now();
            let found = match &net {
                Some(n) => n.tcp(c.local_addr().unwrap(), server),
                None => ProcNet::own().tcp(c.local_addr().unwrap(), server),
            };
            times.push(started.elapsed());
            assert_eq!(found.pid, Some(std::process::id()));
        }
        times.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "attribution {label}: p50 {:.0} us, p99 {:.0} us, max {:.0} us ({} processes on this machine)",
            us(times[499]),
            us(times[989]),
            us(times[999]),
            std::fs::read_dir("/proc")
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()))
                .count()
        );
    }
    drop(accepted);
}
