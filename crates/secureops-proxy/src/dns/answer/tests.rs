#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use hickory_proto::op::Query as Question;
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::rdata::svcb::{IpHint, SVCB, SvcParamKey};
use hickory_proto::rr::rdata::{CNAME, HTTPS};
use proptest::prelude::*;

use super::*;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A query for `qname`/`qtype` with ID 0x1234, RD set, optional EDNS.
fn query_msg(qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.id = 0x1234;
    m.metadata.recursion_desired = true;
    m.add_query(Question::query(name(qname), qtype));
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        m.set_edns(e);
    }
    m
}

fn query_bytes(qname: &str, qtype: RecordType) -> Vec<u8> {
    query_msg(qname, qtype, None).to_vec().unwrap()
}

fn parsed(bytes: &[u8]) -> Query {
    match parse(bytes) {
        Parsed::Query(q) => *q,
        other => panic!("not a query: {other:?}"),
    }
}

fn rejected(bytes: &[u8]) -> (Message, Rejection) {
    match parse(bytes) {
        Parsed::Reject { response, why, .. } => (Message::from_vec(&response).unwrap(), why),
        other => panic!("not rejected: {other:?}"),
    }
}

fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap()
}

#[test]
fn a_plain_query_is_checked_and_normalised() {
    let q = parsed(&query_bytes("WWW.Example.COM.", RecordType::AAAA));
    assert_eq!(q.name.as_deref(), Ok("www.example.com"));
    assert_eq!(q.qtype, RecordType::AAAA);
    assert_eq!(q.udp_limit, 512);
    assert!(!q.dnssec_ok);
}

#[test]
fn edns_payload_is_clamped() {
    let big = parsed(&query_msg("a.test.", RecordType::A, Some(4096)).to_vec().unwrap());
    assert_eq!(big.udp_limit, MAX_UDP_ANSWER);
    let tiny = parsed(&query_msg("a.test.", RecordType::A, Some(100)).to_vec().unwrap());
    assert_eq!(tiny.udp_limit, 512);
}

#[test]
fn runts_and_responses_are_dropped() {
    assert!(matches!(parse(&[]), Parsed::Drop(Dropped::Runt)));
    assert!(matches!(parse(&[0x12, 0x34, 0x01]), Parsed::Drop(Dropped::Runt)));
    assert!(matches!(parse(&[0u8; 11]), Parsed::Drop(Dropped::Runt)));
    let mut response = query_msg("a.test.", RecordType::A, None);
    response.metadata.message_type = MessageType::Response;
    assert!(matches!(
        parse(&response.to_vec().unwrap()),
        Parsed::Drop(Dropped::Response)
    ));
}

#[test]
fn header_only_is_formerr() {
    // A valid header claiming one question, and nothing after it.
    let bytes = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let (m, why) = rejected(&bytes);
    assert!(matches!(why, Rejection::Malformed(_)));
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.message_type, MessageType::Response);
}

#[test]
fn compression_pointer_loops_are_formerr() {
    // The question name is a pointer to itself (offset 12).
    let mut self_loop = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    self_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let (m, why) = rejected(&self_loop);
    assert!(matches!(why, Rejection::Malformed(_)), "{why}");
    assert_eq!(m.metadata.id, 0xabcd);
    // Two labels pointing at each other.
    let mut pair = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pair.extend_from_slice(&[1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12, 0, 1, 0, 1]);
    let (_, why) = rejected(&pair);
    assert!(matches!(why, Rejection::Malformed(_)), "{why}");
}

#[test]
fn several_questions_are_formerr() {
    let mut m = query_msg("a.test.", RecordType::A, None);
    m.add_query(Question::query(name("b.test."), RecordType::A));
    let (r, why) = rejected(&m.to_vec().unwrap());
    assert_eq!(why, Rejection::QuestionCount(2));
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert!(r.queries.is_empty());
    let mut none = query_msg("a.test.", RecordType::A, None);
    none.queries.clear();
    assert_eq!(rejected(&none.to_vec().unwrap()).1, Rejection::QuestionCount(0));
}

#[test]
fn records_in_a_query_are_formerr() {
    let mut m = query_msg("allowed.test.", RecordType::A, None);
    m.add_answer(Record::from_rdata(
        name("x.test."),
        60,
        RData::A(A(Ipv4Addr::new(1, 2, 3, 4))),
    ));
    assert_eq!(rejected(&m.to_vec().unwrap()).1, Rejection::Records);
}

#[test]
fn oversized_is_formerr() {
    let mut bytes = query_bytes("a.test.", RecordType::A);
    bytes.resize(MAX_QUERY + 1, 0);
    let (m, why) = rejected(&bytes);
    assert_eq!(why, Rejection::Oversized(MAX_QUERY + 1));
    assert_eq!(m.metadata.id, 0x1234);
}

#[test]
fn other_opcodes_edns_versions_and_transfers() {
    let mut notify = query_msg("a.test.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let (m, why) = rejected(&notify.to_vec().unwrap());
    assert!(matches!(why, Rejection::Opcode(_)));
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);

    let mut v1 = query_msg("a.test.", RecordType::A, Some(1232));
    v1.edns.as_mut().unwrap().set_version(1);
    let (m, why) = rejected(&v1.to_vec().unwrap());
    assert_eq!(why, Rejection::EdnsVersion(1));
    // 16 reads back as BADSIG, its TSIG twin: compare the number.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.edns.is_some());

    let (m, why) = rejected(&query_bytes("a.test.", RecordType::AXFR));
    assert_eq!(why, Rejection::ZoneTransfer);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn names_no_rule_can_match() {
    assert_eq!(normalise(&Name::root()), Err(NameError::Root));
    assert_eq!(normalise(&name("1.2.3.4.")), Err(NameError::Ip));
    assert!(matches!(normalise(&name("127.1.")), Err(NameError::Host(_))));
    assert_eq!(
        normalise(&name("_dmarc.Example.com.")).as_deref(),
        Ok("_dmarc.example.com")
    );
    // A dot inside a label: "github.com" as one label under "evil".
    let dotted = Name::from_labels(vec![&b"github.com"[..], &b"evil"[..]]).unwrap();
    assert_eq!(normalise(&dotted), Err(NameError::Label));
    let binary = Name::from_labels(vec![&b"a\x00b"[..], &b"test"[..]]).unwrap();
    assert_eq!(normalise(&binary), Err(NameError::Label));
    assert_eq!(escaped(&binary), "a\\000b.test");
}

#[test]
fn sinkhole_answers() {
    let q = parsed(&query_bytes("C2VjcmV0.Denied.test.", RecordType::A));
    let nx = sinkhole(&q, SinkholeMode::Nxdomain);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.metadata.id, 0x1234);
    assert!(nx.metadata.recursion_desired && nx.metadata.recursion_available);
    // The question is echoed with its case.
    assert_eq!(nx.queries[0].name().to_ascii(), "C2VjcmV0.Denied.test.");

    let zero = sinkhole(&q, SinkholeMode::Zero);
    assert_eq!(zero.metadata.response_code, ResponseCode::NoError);
    assert_eq!(zero.answers[0].data, RData::A(A(Ipv4Addr::UNSPECIFIED)));
    let q6 = parsed(&query_bytes("x.denied.test.", RecordType::AAAA));
    assert_eq!(
        sinkhole(&q6, SinkholeMode::Zero).answers[0].data,
        RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED))
    );
    let txt = parsed(&query_bytes("x.denied.test.", RecordType::TXT));
    let nodata = sinkhole(&txt, SinkholeMode::Zero);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
}

#[test]
fn static_answers_match_the_family() {
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let a = addresses(&parsed(&query_bytes("s.test.", RecordType::A)), &ips);
    assert_eq!(a.answers.len(), 1);
    assert_eq!(a.answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
    let any = addresses(&parsed(&query_bytes("s.test.", RecordType::ANY)), &ips);
    assert_eq!(any.answers.len(), 2);
    let mx = addresses(&parsed(&query_bytes("s.test.", RecordType::MX)), &ips);
    assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
    assert!(mx.answers.is_empty());
}

#[test]
fn reverse_names_of_private_addresses() {
    assert_eq!(
        private_reverse(&name("1.0.0.127.in-addr.arpa.")),
        Some(("127.0.0.1".parse().unwrap(), "loopback"))
    );
    assert_eq!(
        private_reverse(&name("5.1.168.192.IN-ADDR.ARPA.")).map(|r| r.1),
        Some("private")
    );
    assert_eq!(private_reverse(&name("8.8.8.8.in-addr.arpa.")), None);
    assert_eq!(private_reverse(&name("10.in-addr.arpa.")), None);
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.";
    assert_eq!(private_reverse(&name(v6)).map(|r| r.1), Some("loopback"));

    let hosts = HashMap::from([("web.test".to_owned(), vec!["127.0.0.1".parse().unwrap()])]);
    let map = reverse_map(&hosts);
    let q = parsed(&query_bytes("1.0.0.127.in-addr.arpa.", RecordType::PTR));
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let m = local_reverse(&q, map.get(&ip).map(Vec::as_slice));
    assert_eq!(m.answers[0].data, RData::PTR(PTR(name("web.test."))));
    let none = local_reverse(&q, None);
    assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
}

fn answer_with(records: Vec<Record>) -> Message {
    let q = parsed(&query_bytes("allowed.test.", RecordType::A));
    let mut m = response(&q, ResponseCode::NoError);
    for r in records {
        m.add_answer(r);
    }
    m
}

fn a(ip: &str, ttl: u32) -> Record {
    Record::from_rdata(name("allowed.test."), ttl, RData::A(A(ip.parse().unwrap())))
}

#[test]
fn rebinding_guard_checks_every_address() {
    let none = PrivateDestinations::default();
    let metadata = answer_with(vec![a("93.184.215.14", 60), a("169.254.169.254", 60)]);
    let bad = first_unsafe(&metadata, &none).unwrap();
    assert_eq!(bad.ip, "169.254.169.254".parse::<IpAddr>().unwrap());
    assert!(first_unsafe(&answer_with(vec![a("93.184.215.14", 60)]), &none).is_none());

    let local = PrivateDestinations::parse(&["127.0.0.0/8"]).unwrap();
    assert!(first_unsafe(&answer_with(vec![a("127.0.0.1", 60)]), &local).is_none());
    assert!(first_unsafe(&answer_with(vec![a("127.0.0.1", 60)]), &none).is_some());

    let mapped = Record::from_rdata(
        name("allowed.test."),
        60,
        RData::AAAA(AAAA("::ffff:10.0.0.1".parse().unwrap())),
    );
    assert!(first_unsafe(&answer_with(vec![mapped]), &none).is_some());

    // A CNAME chain passes; its final address is what is judged.
    let chain = vec![
        Record::from_rdata(name("allowed.test."), 60, RData::CNAME(CNAME(name("cdn.test.")))),
        Record::from_rdata(name("cdn.test."), 60, RData::A(A("10.1.2.3".parse().unwrap()))),
    ];
    assert!(first_unsafe(&answer_with(chain), &none).is_some());

    // HTTPS address hints are addresses too.
    let svcb = SVCB::new(
        1,
        Name::root(),
        vec![(
            SvcParamKey::Ipv4Hint,
            SvcParamValue::Ipv4Hint(IpHint(vec![A("192.168.1.1".parse().unwrap())])),
        )],
    );
    let https = Record::from_rdata(name("allowed.test."), 60, RData::HTTPS(HTTPS(svcb)));
    assert!(first_unsafe(&answer_with(vec![https]), &none).is_some());
}

fn soa(ttl: u32, minimum: u32) -> Record {
    Record::from_rdata(
        name("test."),
        ttl,
        RData::SOA(SOA::new(
            name("ns.test."),
            name("admin.test."),
            1,
            3600,
            600,
            86400,
            minimum,
        )),
    )
}

#[test]
fn cache_ttls_follow_rfc_2308() {
    assert_eq!(
        cache_ttl(&answer_with(vec![a("1.2.3.4", 300), a("1.2.3.5", 30)])),
        Some(30)
    );
    assert_eq!(
        cache_ttl(&answer_with(vec![a("1.2.3.4", 10_000_000)])),
        Some(MAX_CACHE_TTL)
    );
    assert_eq!(cache_ttl(&answer_with(vec![a("1.2.3.4", 0)])), None);

    let mut nx = answer_with(vec![]);
    nx.metadata.response_code = ResponseCode::NXDomain;
    assert_eq!(cache_ttl(&nx), None, "no SOA: not cached");
    nx.add_authority(soa(300, 60));
    assert_eq!(cache_ttl(&nx), Some(60), "min(SOA TTL, MINIMUM)");
    let mut nodata = answer_with(vec![]);
    nodata.add_authority(soa(45, 600));
    assert_eq!(cache_ttl(&nodata), Some(45));

    let mut servfail = answer_with(vec![a("1.2.3.4", 300)]);
    servfail.metadata.response_code = ResponseCode::ServFail;
    assert_eq!(cache_ttl(&servfail), None);
    let mut truncated = answer_with(vec![a("1.2.3.4", 300)]);
    truncated.metadata.truncation = true;
    assert_eq!(cache_ttl(&truncated), None);
}

#[test]
fn cached_answers_are_fitted_to_the_new_query() {
    let cached = answer_with(vec![a("1.2.3.4", 300)]);
    let mut second = query_msg("ALLOWED.test.", RecordType::A, Some(4096));
    second.metadata.id = 0x9999;
    let q = parsed(&second.to_vec().unwrap());
    let m = from_cache(&q, &cached, 100);
    assert_eq!(m.metadata.id, 0x9999);
    assert_eq!(m.queries[0].name().to_ascii(), "ALLOWED.test.");
    assert_eq!(m.answers[0].ttl, 200);
    assert!(m.edns.is_some(), "EDNS in, EDNS out");
    let plain = parsed(&query_bytes("allowed.test.", RecordType::A));
    assert!(from_cache(&plain, &cached, 0).edns.is_none());
}

#[test]
fn large_answers_are_truncated_for_udp() {
    let q = parsed(&query_bytes("allowed.test.", RecordType::A));
    let records = (0..100u8).map(|i| a(&format!("1.2.3.{i}"), 60)).collect();
    let big = answer_with(records);
    let udp = encode(&big, q.udp_limit);
    assert!(udp.len() <= 512);
    let m = decode(&udp);
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);
    let tcp = decode(&encode(&big, u16::MAX));
    assert_eq!(tcp.answers.len(), 100);
    assert!(!tcp.metadata.truncation);
    // Raw upstream bytes: passed as they are when they fit.
    let raw = big.to_vec().unwrap();
    assert_eq!(fit(raw.clone(), &big, u16::MAX), raw);
    assert!(decode(&fit(raw, &big, 512)).metadata.truncation);
}

#[test]
fn refused_header_keeps_the_id() {
    let m = decode(&refused_header(&query_bytes("a.test.", RecordType::A)).unwrap());
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(refused_header(&[1, 2, 3]).is_none());
}

#[test]
fn parsed_name_from_str_round_trip() {
    // Sanity: the test helper builds what the wire carries.
    assert_eq!(Name::from_str("a.b.").unwrap().num_labels(), 2);
}

proptest! {
    /// Any bytes: no panic, and an answer (if any) is a response with the
    /// same ID, small enough for UDP.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        match parse(&bytes) {
            Parsed::Drop(_) => {}
            Parsed::Reject { response, .. } => {
                let m = decode(&response);
                prop_assert_eq!(m.metadata.message_type, MessageType::Response);
                prop_assert_eq!(&response[..2], &bytes[..2]);
                prop_assert!(response.len() <= 512);
            }
            Parsed::Query(q) => {
                let r = encode(&sinkhole(&q, SinkholeMode::Zero), q.udp_limit);
                prop_assert_eq!(decode(&r).metadata.id, q.message.metadata.id);
            }
        }
    }

    /// Mutating one byte of a valid query never panics either.
    #[test]
    fn mutated_queries_never_panic(at in 0usize..40, byte in any::<u8>()) {
        let mut bytes = query_msg("www.example.com.", RecordType::A, Some(1232)).to_vec().unwrap();
        let at = at % bytes.len();
        bytes[at] = byte;
        let _ = parse(&bytes);
    }
}
