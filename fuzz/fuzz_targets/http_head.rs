//! The explicit proxy's request head: `httparse` under our caps, the body
//! framing rules, and the destination of CONNECT and absolute-form
//! requests (and of redirected ones, by `Host`), then host normalisation.
//!
//! Beyond "no panic": a complete head parses the same from its own bytes,
//! and every strict prefix of it asks for more (the proxy reads a head in
//! pieces; a prefix refused as malformed would refuse a valid request that
//! arrived in two segments).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secureops_policy::normalize_host;
use secureops_proxy::peek::http_head::{HeadError, MAX_HEAD, parse_request, parse_response};
use secureops_proxy::peek::target::{connect_destination, http_destination};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(head) => {
            assert!(head.len <= data.len() && head.len <= MAX_HEAD);
            let again = parse_request(&data[..head.len]);
            assert_eq!(again.as_ref(), Ok(&head), "the head alone parses the same");
            // Split points taken from the input itself.
            for seed in [data[0], data[head.len / 2], data[head.len - 1]] {
                let cut = usize::from(seed) * head.len / 256;
                assert_eq!(
                    parse_request(&data[..cut]),
                    Err(HeadError::Incomplete),
                    "prefix of {cut} bytes of a complete {}-byte head",
                    head.len
                );
            }
            let _ = head.request_body();
            if head.method.eq_ignore_ascii_case("CONNECT") {
                if let Ok(peeked) = connect_destination(&head) {
                    assert!(peeked.port != 0 && !peeked.host.is_empty());
                    let _ = normalize_host(&peeked.host);
                }
            } else {
                for port in [None, Some(8080)] {
                    if let Ok((peeked, authority, path)) = http_destination(&head, port) {
                        assert!(peeked.port != 0 && !peeked.host.is_empty());
                        assert!(path.starts_with('/'), "origin-form path {path:?}");
                        assert!(!authority.is_empty());
                        let _ = normalize_host(&peeked.host);
                    }
                }
            }
        }
        Err(HeadError::Incomplete) => assert!(data.len() <= MAX_HEAD),
        Err(_) => {}
    }
    if let Ok(head) = parse_response(data) {
        assert!(head.len <= data.len());
        let _ = head.response_body("GET");
        let _ = head.response_body("HEAD");
    }
});
