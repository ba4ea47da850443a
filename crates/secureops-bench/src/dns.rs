//! Just enough of the DNS wire format for the benchmark: A queries, their
//! answers' ID / RCODE / answer count, and the fake authoritative upstream.

/// RCODE of a name that does not exist.
pub const NXDOMAIN: u8 = 3;
/// The address the fake upstream gives every name it knows.
pub const ANSWER_IP: [u8; 4] = [1, 2, 3, 4];
/// TTL of the fake upstream's answers (long: the cached case must hit).
const TTL: u32 = 3600;

/// Writes an A query for `name` with `id` (recursion desired) into `out`.
pub fn query(id: u16, name: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.extend_from_slice(&[0, 0, 1, 0, 1]);
}

/// The parts of an answer the benchmark checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Message ID.
    pub id: u16,
    /// Response code (0 NOERROR, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// Records in the answer section.
    pub answers: u16,
}

/// Reads the header of a response; `None` when it is not one.
pub fn reply(msg: &[u8]) -> Option<Reply> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    Some(Reply {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        rcode: msg[3] & 0x0F,
        answers: u16::from_be_bytes([msg[6], msg[7]]),
    })
}

/// The question of a query: (name in lower case, end offset of the
/// question section). `None` when malformed.
fn question(msg: &[u8]) -> Option<(String, usize)> {
    if msg.len() < 12 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    // QTYPE + QCLASS.
    msg.get(i..i + 4)?;
    Some((name, i + 4))
}

/// The fake upstream: answers `*.cached.bench` and `*.static.bench` with
/// one A record, everything else NXDOMAIN (EDNS is not echoed). Writes the
/// answer to `out`; `false` when the message is not worth answering.
pub fn authoritative_answer(msg: &[u8], out: &mut Vec<u8>) -> bool {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return false;
    }
    let Some((name, end)) = question(msg) else {
        return false;
    };
    let known = name.ends_with(".cached.bench") || name.ends_with(".static.bench");
    let qtype_a = msg[end - 4..end - 2] == [0, 1];
    out.clear();
    out.extend_from_slice(&msg[..2]);
    // QR, AA, RD copied; RA; RCODE.
    out.push(0x84 | (msg[2] & 0x01));
    out.push(0x80 | if known { 0 } else { NXDOMAIN });
    out.extend_from_slice(&[0, 1, 0, u8::from(known && qtype_a), 0, 0, 0, 0]);
    out.extend_from_slice(&msg[12..end]);
    if known && qtype_a {
        out.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&[0, 4]);
        out.extend_from_slice(&ANSWER_IP);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut q = Vec::new();
        let mut a = Vec::new();
        query(0xBEEF, "C7.Cached.Bench", &mut q);
        assert!(reply(&q).is_none(), "a query is not a reply");
        assert!(authoritative_answer(&q, &mut a));
        assert_eq!(
            reply(&a),
            Some(Reply {
                id: 0xBEEF,
                rcode: 0,
                answers: 1
            })
        );
        assert_eq!(&a[a.len() - 4..], &ANSWER_IP);
        query(7, "x.denied.bench", &mut q);
        assert!(authoritative_answer(&q, &mut a));
        assert_eq!(
            reply(&a),
            Some(Reply {
                id: 7,
                rcode: NXDOMAIN,
                answers: 0
            })
        );
        assert!(!authoritative_answer(&q[..14], &mut a));
    }
}
