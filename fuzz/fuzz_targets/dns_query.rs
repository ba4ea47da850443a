//! The DNS sinkhole's query path, decode → decision → answer encode, with
//! a fixed policy and no upstream, over UDP and TCP framing rules.
//!
//! Beyond "no panic": every answer decodes, echoes the query's ID, is a
//! response and fits the transport; a name the allowlist does not cover is
//! never let through nor forwarded; the audit entry encodes to one valid
//! log line whatever the name holds.
#![no_main]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::RData;
use libfuzzer_sys::fuzz_target;
use secureops_audit::{AuditConfig, AuditLog, Entry, Verdict};
use secureops_policy::{Allowlist, Host, PrivateDestinations, normalize_host};
use secureops_proxy::dns::fuzz::{Handled, LocalAnswers};
use secureops_proxy::{DnsConfig, DnsPolicy, SinkholeMode, Transport};

const RULES: &[&str] = &[
    "example.com",
    "*.allowed.test",
    "static.test:*",
    "private.test",
    "10.0.0.0/8:*",
];

struct Fixture {
    engines: Vec<LocalAnswers>,
    allowlist: Allowlist,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = AuditLog::open(AuditConfig::new(dir.path().join("a.jsonl"), dir.path().join("a.key"))).expect("log");
    let allowlist = Allowlist::parse(RULES).expect("rules");
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let hosts = HashMap::from([
        ("static.test".to_owned(), vec![ip("203.0.113.5"), ip("2001:db8::5")]),
        ("private.test".to_owned(), vec![ip("10.1.1.1")]),
    ]);
    let engines = [SinkholeMode::Nxdomain, SinkholeMode::Zero]
        .into_iter()
        .map(|sinkhole| {
            let config = DnsConfig {
                sinkhole,
                hosts: hosts.clone(),
                ..DnsConfig::default()
            };
            let policy = DnsPolicy {
                allowlist: allowlist.clone(),
                private: PrivateDestinations::default(),
                attribution: None,
                mode: secureops_policy::Mode::Enforce,
            };
            LocalAnswers::new(config, policy, audit.clone())
        })
        .collect();
    Fixture {
        engines,
        allowlist,
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    // The question as an independent decoder reads it.
    let asked = Message::from_vec(data).ok();
    let name = asked
        .as_ref()
        .and_then(|m| m.queries.first())
        .map(|q| q.name().to_ascii());
    let covered = name
        .as_deref()
        .is_some_and(|n| match normalize_host(n.trim_end_matches('.')) {
            Ok(Host::Name(n)) => fx.allowlist.resolves(&n),
            _ => false,
        });
    let reverse = name.as_deref().is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        n.ends_with(".in-addr.arpa.") || n.ends_with(".ip6.arpa.")
    });
    let engine = &fx.engines[usize::from(data.len() % 2 == 1)];
    for transport in [Transport::Udp, Transport::Tcp] {
        match engine.handle(data, transport) {
            Handled::Answered {
                entry,
                reply,
                unrecorded,
            } => {
                for bytes in [&reply, &unrecorded] {
                    check_answer(data, bytes, transport);
                }
                if entry.decision == Verdict::Allow {
                    assert!(covered || reverse, "allowed {name:?}: {}", entry.reason);
                } else {
                    assert_no_address(&reply);
                }
                // The entry is one line of the log, whatever the name holds.
                let mut lines = secureops_audit::bench::Lines::new();
                lines.push(&entry, false);
                let line = lines.out.strip_suffix(b"\n").expect("a line ends in a newline");
                assert!(!line.contains(&b'\n'), "one line");
                Entry::parse(line).expect("the entry reads back");
            }
            Handled::Rejected(bytes) => check_answer(data, &bytes, transport),
            Handled::Dropped => assert!(data.len() < 12 || data[2] & 0x80 != 0, "only runts and responses"),
            Handled::Forward => assert!(covered, "forwarded {name:?}"),
        }
    }
});

/// Every answer decodes, is a response to this ID and fits the transport.
fn check_answer(query: &[u8], bytes: &[u8], transport: Transport) {
    let answer = Message::from_vec(bytes).unwrap_or_else(|e| panic!("answer does not decode: {e}"));
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    assert_eq!(answer.metadata.id.to_be_bytes(), [query[0], query[1]], "the query's ID");
    let limit = match transport {
        Transport::Udp => 1232,
        Transport::Tcp => usize::from(u16::MAX),
    };
    assert!(bytes.len() <= limit, "{} bytes over {transport}", bytes.len());
}

/// A refusal hands out no address but the sinkhole's `0.0.0.0` / `::`.
fn assert_no_address(bytes: &[u8]) {
    let Ok(answer) = Message::from_vec(bytes) else {
        return;
    };
    for record in &answer.answers {
        match &record.data {
            RData::A(a) => assert!(a.0.is_unspecified(), "refusal answers {a}"),
            RData::AAAA(a) => assert!(a.0.is_unspecified(), "refusal answers {a}"),
            other => panic!("refusal answers {other:?}"),
        }
    }
}
