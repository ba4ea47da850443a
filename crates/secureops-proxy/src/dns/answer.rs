//! The pure core of the sinkhole: query bytes in, a checked [`Query`] (or
//! a rejection) out, and every answer built from a query. No I/O, no clock,
//! no policy, so it is unit-tested and fuzzable without sockets.
//!
//! The wire format is hickory-proto's; the only bytes read by hand are the
//! fixed 12-byte header's ID and QR bit, through hickory's `Header`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::svcb::SvcParamValue;
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use secureops_policy::{Host, HostError, PrivateDestinations, UnsafeDestination, normalize_host, special_purpose, vet};

/// Largest query accepted. Real queries are far below 512 bytes; EDNS
/// padding may grow them, nothing legitimate needs more.
pub(crate) const MAX_QUERY: usize = 4096;
/// Largest UDP answer sent, whatever the client advertises (DNS flag day
/// 2020: 1232 bytes avoids IP fragmentation).
pub(crate) const MAX_UDP_ANSWER: u16 = 1232;
/// UDP answer size without EDNS (RFC 1035).
const CLASSIC_UDP: u16 = 512;
/// TTL of sinkhole answers: short, so a policy change shows quickly.
pub(crate) const SINKHOLE_TTL: u32 = 10;
/// TTL of `[dns] hosts` answers.
pub(crate) const STATIC_TTL: u32 = 60;

/// What the sinkhole answers for names it does not let through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SinkholeMode {
    /// NXDOMAIN for every type (`sinkhole = "nxdomain"`, the default).
    #[default]
    Nxdomain,
    /// `0.0.0.0` for A, `::` for AAAA, NODATA for other types
    /// (`sinkhole = "zero"`).
    Zero,
}

/// Why a message gets no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Shorter than a DNS header: there is no ID to answer to.
    Runt,
    /// A response (QR=1): answering responses invites loops and reflection.
    Response,
}

/// Why a query is answered with an error code instead of a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    /// Larger than [`MAX_QUERY`].
    #[error("oversized query ({0} bytes)")]
    Oversized(usize),
    /// Not decodable as a DNS message.
    #[error("malformed query: {0}")]
    Malformed(String),
    /// Not a standard query (NOTIFY, UPDATE, ...).
    #[error("opcode {0} is not served")]
    Opcode(String),
    /// Zero or several questions: a resolver answers exactly one.
    #[error("{0} questions in one query (exactly one is served)")]
    QuestionCount(usize),
    /// Records in the answer or authority section, or anything but OPT in
    /// the additional section: nothing a stub resolver sends, and a way to
    /// carry data upstream.
    #[error("query carries resource records")]
    Records,
    /// EDNS version other than 0.
    #[error("EDNS version {0} is not supported")]
    EdnsVersion(u8),
    /// AXFR/IXFR: zone transfers are not a resolver's business.
    #[error("zone transfers are not served")]
    ZoneTransfer,
}

impl Rejection {
    /// The response code the client gets.
    pub(crate) fn rcode(&self) -> ResponseCode {
        match self {
            Rejection::Oversized(_) | Rejection::Malformed(_) | Rejection::QuestionCount(_) | Rejection::Records => {
                ResponseCode::FormErr
            }
            Rejection::Opcode(_) => ResponseCode::NotImp,
            Rejection::EdnsVersion(_) => ResponseCode::BADVERS,
            Rejection::ZoneTransfer => ResponseCode::Refused,
        }
    }
}

/// A query name that no rule can ever match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    /// The root name (`.`).
    #[error("the root name")]
    Root,
    /// A label with a byte outside letters, digits, `-` and `_` (a dot
    /// inside a label included: it would make two names read the same).
    #[error("label with a byte outside [A-Za-z0-9_-]")]
    Label,
    /// Refused by host normalisation.
    #[error("{0}")]
    Host(HostError),
    /// A name that reads as an IP address.
    #[error("an IP address is not a name")]
    Ip,
}

/// The outcome of [`parse`].
#[derive(Debug)]
pub(crate) enum Parsed {
    /// No answer at all.
    Drop(Dropped),
    /// Answer `response` (an error code) and record `why`.
    Reject {
        /// The encoded error response.
        response: Vec<u8>,
        /// Why, for the audit entry.
        why: Rejection,
        /// The question, when it could be read (for the audit entry).
        name: Option<String>,
        /// Its type.
        qtype: Option<RecordType>,
    },
    /// A well-formed standard query with one question.
    Query(Box<Query>),
}

/// A checked query.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// The decoded request.
    pub message: Message,
    /// The question's name as sent (case kept, for echoing).
    pub qname: Name,
    /// The normalised name the decision is made on.
    pub name: Result<String, NameError>,
    /// The question's type.
    pub qtype: RecordType,
    /// The question's class.
    pub qclass: DNSClass,
    /// EDNS DO bit.
    pub dnssec_ok: bool,
    /// Largest UDP answer this client takes.
    pub udp_limit: u16,
}

impl Query {
    /// The name for the audit entry: normalised, or escaped when invalid.
    pub(crate) fn display_name(&self) -> String {
        match &self.name {
            Ok(name) => name.clone(),
            Err(_) => escaped(&self.qname),
        }
    }
}

/// Checks one incoming message. See [`Parsed`].
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    let header = match Header::read(&mut BinDecoder::new(bytes)) {
        Ok(h) => h,
        Err(_) => return Parsed::Drop(Dropped::Runt),
    };
    if header.metadata.message_type == MessageType::Response {
        return Parsed::Drop(Dropped::Response);
    }
    let id = header.metadata.id;
    let reject = |why: Rejection, message: Option<&Message>| {
        let mut m = Message::error_msg(id, OpCode::Query, why.rcode());
        m.metadata.recursion_desired = header.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        let (mut name, mut qtype) = (None, None);
        if let Some(q) = message {
            m.metadata.op_code = q.metadata.op_code;
            if q.queries.len() == 1 {
                m.add_queries(q.queries.iter().cloned());
                name = q.queries.first().map(|q| escaped(q.name()));
                qtype = q.queries.first().map(|q| q.query_type());
            }
            if q.edns.is_some() {
                m.set_edns(response_edns(false));
            }
        }
        // BADVERS is an extended code: it needs an OPT record to be sent.
        if why.rcode().high() > 0 && m.edns.is_none() {
            m.set_edns(response_edns(false));
        }
        Parsed::Reject {
            response: encode_or_servfail(&m, u16::MAX),
            why,
            name,
            qtype,
        }
    };
    if bytes.len() > MAX_QUERY {
        return reject(Rejection::Oversized(bytes.len()), None);
    }
    let message = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => return reject(Rejection::Malformed(one_line(&e.to_string())), None),
    };
    if message.metadata.op_code != OpCode::Query {
        return reject(Rejection::Opcode(message.metadata.op_code.to_string()), Some(&message));
    }
    if message.queries.len() != 1 {
        return reject(Rejection::QuestionCount(message.queries.len()), Some(&message));
    }
    if !message.answers.is_empty()
        || !message.authorities.is_empty()
        || !message.additionals.is_empty()
        || message.signature.is_some()
    {
        return reject(Rejection::Records, Some(&message));
    }
    if let Some(edns) = &message.edns
        && edns.version() != 0
    {
        return reject(Rejection::EdnsVersion(edns.version()), Some(&message));
    }
    let Some(question) = message.queries.first() else {
        return reject(Rejection::QuestionCount(0), Some(&message));
    };
    let qtype = question.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return reject(Rejection::ZoneTransfer, Some(&message));
    }
    let qname = question.name().clone();
    let qclass = question.query_class();
    let (dnssec_ok, udp_limit) = match &message.edns {
        Some(e) => (e.flags().dnssec_ok, e.max_payload().clamp(CLASSIC_UDP, MAX_UDP_ANSWER)),
        None => (false, CLASSIC_UDP),
    };
    Parsed::Query(Box::new(Query {
        name: normalise(&qname),
        qname,
        qtype,
        qclass,
        dnssec_ok,
        udp_limit,
        message,
    }))
}

/// The name a decision is made on: lower case, no trailing dot, only
/// letters, digits, `-` and `_` in labels, then [`normalize_host`].
pub(crate) fn normalise(name: &Name) -> Result<String, NameError> {
    if name.is_root() {
        return Err(NameError::Root);
    }
    let mut text = String::with_capacity(name.len());
    for label in name.iter() {
        if label.is_empty()
            || !label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NameError::Label);
        }
        if !text.is_empty() {
            text.push('.');
        }
        // Checked above: every byte is ASCII.
        text.extend(label.iter().map(|&b| char::from(b.to_ascii_lowercase())));
    }
    match normalize_host(&text) {
        Ok(Host::Name(n)) => Ok(n),
        Ok(Host::Ip(_)) => Err(NameError::Ip),
        Err(e) => Err(NameError::Host(e)),
    }
}

/// A name for display: printable bytes as they are, others as `\DDD`,
/// never longer than a DNS name can be escaped to.
pub(crate) fn escaped(name: &Name) -> String {
    let mut out = String::new();
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(char::from(b.to_ascii_lowercase()));
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
    }
    if out.is_empty() { ".".to_owned() } else { out }
}

/// Replaces control characters so text from the wire cannot split a line.
pub(crate) fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The EDNS record of our own answers.
fn response_edns(dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(MAX_UDP_ANSWER);
    edns.set_dnssec_ok(dnssec_ok);
    edns
}

/// An empty response to `q` with `rcode`: the question echoed (case kept),
/// RD/CD copied, RA set, EDNS when the query had it.
pub(crate) fn response(q: &Query, rcode: ResponseCode) -> Message {
    let mut m = Message::response(q.message.metadata.id, OpCode::Query);
    m.metadata = Metadata::response_from_request(&q.message.metadata);
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.add_queries(q.message.queries.iter().cloned());
    if q.message.edns.is_some() {
        m.set_edns(response_edns(q.dnssec_ok));
    }
    m
}

/// The answer for a name that is not let through.
pub(crate) fn sinkhole(q: &Query, mode: SinkholeMode) -> Message {
    match mode {
        SinkholeMode::Nxdomain => response(q, ResponseCode::NXDomain),
        SinkholeMode::Zero => {
            let mut m = response(q, ResponseCode::NoError);
            let data = match q.qtype {
                RecordType::A => Some(RData::A(A(Ipv4Addr::UNSPECIFIED))),
                RecordType::AAAA => Some(RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED))),
                _ => None,
            };
            if let Some(data) = data {
                m.add_answer(Record::from_rdata(q.qname.clone(), SINKHOLE_TTL, data));
            }
            m
        }
    }
}

/// The answer from `[dns] hosts`: the addresses of the asked family (both
/// for ANY), NODATA for every other type.
pub(crate) fn addresses(q: &Query, ips: &[IpAddr]) -> Message {
    let mut m = response(q, ResponseCode::NoError);
    m.metadata.authoritative = true;
    for ip in ips {
        let data = match (ip, q.qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        m.add_answer(Record::from_rdata(q.qname.clone(), STATIC_TTL, data));
    }
    m
}

/// The local answer for the reverse name of a non-global address: the
/// `[dns] hosts` names of that address for PTR/ANY, else NXDOMAIN (NODATA
/// when names exist but another type was asked).
pub(crate) fn local_reverse(q: &Query, names: Option<&[Name]>) -> Message {
    let Some(names) = names.filter(|n| !n.is_empty()) else {
        return response(q, ResponseCode::NXDomain);
    };
    let mut m = response(q, ResponseCode::NoError);
    m.metadata.authoritative = true;
    if matches!(q.qtype, RecordType::PTR | RecordType::ANY) {
        for name in names {
            m.add_answer(Record::from_rdata(
                q.qname.clone(),
                STATIC_TTL,
                RData::PTR(PTR(name.clone())),
            ));
        }
    }
    m
}

/// When `name` is the full reverse name (in-addr.arpa / ip6.arpa) of an
/// address that is not globally reachable: the address and its range.
pub(crate) fn private_reverse(name: &Name) -> Option<(IpAddr, &'static str)> {
    let net = name.parse_arpa_name().ok()?;
    if net.prefix_len() != net.max_prefix_len() {
        return None;
    }
    let ip = net.addr();
    special_purpose(ip).map(|range| (ip, range))
}

/// The reverse map of `[dns] hosts`: address → names.
pub(crate) fn reverse_map(hosts: &HashMap<String, Vec<IpAddr>>) -> HashMap<IpAddr, Vec<Name>> {
    let mut map: HashMap<IpAddr, Vec<Name>> = HashMap::new();
    for (name, ips) in hosts {
        let Ok(mut fqdn) = Name::from_ascii(name) else { continue };
        fqdn.set_fqdn(true);
        for ip in ips {
            map.entry(ip.to_canonical()).or_default().push(fqdn.clone());
        }
    }
    map
}

/// The first address in `msg` that may not be handed out: every A and
/// AAAA record in any section, and the address hints of SVCB/HTTPS
/// records (browsers connect to those directly).
pub(crate) fn first_unsafe(msg: &Message, private: &PrivateDestinations) -> Option<UnsafeDestination> {
    let records = msg.answers.iter().chain(&msg.authorities).chain(&msg.additionals);
    for record in records {
        let params = match &record.data {
            RData::A(a) => {
                if let Err(e) = vet(IpAddr::V4(a.0), private) {
                    return Some(e);
                }
                continue;
            }
            RData::AAAA(a) => {
                if let Err(e) = vet(IpAddr::V6(a.0), private) {
                    return Some(e);
                }
                continue;
            }
            RData::SVCB(s) => &s.svc_params,
            RData::HTTPS(h) => &h.0.svc_params,
            _ => continue,
        };
        for (_, value) in params {
            let ips: Vec<IpAddr> = match value {
                SvcParamValue::Ipv4Hint(h) => h.0.iter().map(|a| IpAddr::V4(a.0)).collect(),
                SvcParamValue::Ipv6Hint(h) => h.0.iter().map(|a| IpAddr::V6(a.0)).collect(),
                _ => continue,
            };
            if let Some(e) = ips.into_iter().find_map(|ip| vet(ip, private).err()) {
                return Some(e);
            }
        }
    }
    None
}

/// Longest time an answer is cached, whatever its TTL says.
pub(crate) const MAX_CACHE_TTL: u32 = 86_400;
/// Longest time a negative answer is cached (RFC 2308 §5 suggests 1–3 h).
pub(crate) const MAX_NEGATIVE_TTL: u32 = 3_600;

/// How long an upstream answer may be cached, or `None`: positive answers
/// live for their smallest record TTL; NXDOMAIN and NODATA for the SOA's
/// `min(TTL, MINIMUM)` (RFC 2308 §5), and not at all without an SOA.
/// Truncated answers and error codes are never cached.
pub(crate) fn cache_ttl(msg: &Message) -> Option<u32> {
    if msg.metadata.truncation {
        return None;
    }
    let negative = msg.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum).min(MAX_NEGATIVE_TTL)),
        _ => None,
    });
    let ttl = match msg.metadata.response_code {
        ResponseCode::NXDomain => negative?,
        ResponseCode::NoError if msg.answers.is_empty() => negative?,
        ResponseCode::NoError => {
            let positive = msg.answers.iter().map(|r| r.ttl).min()?;
            // A CNAME chain that ends in NODATA carries an SOA too.
            negative.map_or(positive, |n| positive.min(n))
        }
        _ => return None,
    };
    (ttl > 0).then_some(ttl.min(MAX_CACHE_TTL))
}

/// A cached answer made fit for the query `q`: its ID and question (case
/// kept), RD/CD copied, every TTL reduced by `age` seconds, EDNS per the
/// new client.
pub(crate) fn from_cache(q: &Query, cached: &Message, age: u32) -> Message {
    let mut m = cached.clone();
    let rcode = m.metadata.response_code;
    let authentic = m.metadata.authentic_data;
    m.metadata = Metadata::response_from_request(&q.message.metadata);
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.metadata.authentic_data = authentic && q.dnssec_ok;
    m.queries.clone_from(&q.message.queries);
    for r in m.answers.iter_mut().chain(&mut m.authorities).chain(&mut m.additionals) {
        r.ttl = r.ttl.saturating_sub(age);
    }
    m.edns = q.message.edns.is_some().then(|| response_edns(q.dnssec_ok));
    m
}

/// Encodes `msg` to fit `limit` bytes: a larger answer becomes its header,
/// question and EDNS with TC set, so the client retries over TCP.
pub(crate) fn encode(msg: &Message, limit: u16) -> Vec<u8> {
    match msg.to_vec() {
        Ok(bytes) if bytes.len() <= usize::from(limit) => bytes,
        Ok(_) => {
            let mut short = msg.truncate();
            short.metadata.message_type = MessageType::Response;
            encode_or_servfail(&short, limit)
        }
        Err(_) => servfail(msg.metadata.id),
    }
}

/// Raw upstream bytes as they are when they fit `limit`, else truncated.
pub(crate) fn fit(raw: Vec<u8>, parsed: &Message, limit: u16) -> Vec<u8> {
    if raw.len() <= usize::from(limit) {
        raw
    } else {
        encode(parsed, limit)
    }
}

fn encode_or_servfail(msg: &Message, limit: u16) -> Vec<u8> {
    match msg.to_vec() {
        Ok(bytes) if bytes.len() <= usize::from(limit) => bytes,
        _ => servfail(msg.metadata.id),
    }
}

/// A bare SERVFAIL header: the answer of last resort.
pub(crate) fn servfail(id: u16) -> Vec<u8> {
    let mut m = Message::error_msg(id, OpCode::Query, ResponseCode::ServFail);
    m.metadata.recursion_available = true;
    m.to_vec().unwrap_or_default()
}

/// REFUSED for the message whose first bytes are `bytes`, with nothing but
/// its ID (used before the query is decoded: rate limits, overload).
pub(crate) fn refused_header(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut m = Message::error_msg(header.metadata.id, OpCode::Query, ResponseCode::Refused);
    m.metadata.recursion_desired = header.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.to_vec().ok()
}

#[cfg(test)]
mod tests;
