//! The SNI peek on the first bytes of a TLS connection.
//!
//! The proxy calls `parse_sni` on what it has read so far, again after
//! every read, so:
//! - reads split anywhere: any answer other than "incomplete" on a prefix
//!   must be the answer on the whole input (split points from the input);
//! - records split anywhere: a ClientHello the parser reads must read the
//!   same when its handshake bytes are cut into records of another size
//!   (size from the input), down to one byte per record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secureops_proxy::peek::tls_sni::{SniError, parse_sni};

fuzz_target!(|data: &[u8]| {
    let full = parse_sni(data);
    if data.is_empty() {
        return;
    }
    for seed in [data[0], data[data.len() / 2], data[data.len() - 1]] {
        let cut = usize::from(seed) * data.len() / 256;
        let part = parse_sni(&data[..cut]);
        if part != Err(SniError::Incomplete) {
            assert_eq!(part, full, "prefix of {cut} bytes");
        }
    }
    if full.is_ok()
        && let Some(stream) = handshake_stream(data)
    {
        let size = 1 + usize::from(data[data.len() - 1]) * 37 % 700;
        for size in [size, 1] {
            assert_eq!(parse_sni(&records(&stream, size)), full, "records of {size} bytes");
        }
    }
});

/// The handshake bytes of the leading handshake records, up to the end of
/// the first handshake message (as a TLS stack reassembles them).
fn handshake_stream(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut stream = Vec::new();
    loop {
        if stream.len() >= 4 {
            let need = 4 + (usize::from(stream[1]) << 16 | usize::from(stream[2]) << 8 | usize::from(stream[3]));
            if stream.len() >= need {
                stream.truncate(need);
                return Some(stream);
            }
        }
        let [0x16, 3, _, hi, lo, rest @ ..] = data else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let take = len.min(rest.len());
        stream.extend_from_slice(&rest[..take]);
        data = &rest[take..];
    }
}

/// `stream` cut into handshake records of at most `size` bytes.
fn records(stream: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len() + 5 * (stream.len() / size + 1));
    for chunk in stream.chunks(size) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}
