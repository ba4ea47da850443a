//! Where a request goes, from its head alone: the CONNECT authority, the
//! absolute-form URL, or (redirected connections) the one `Host` header.
//! Pure functions over a parsed [`Head`], shared by the tunnel and the HTTP
//! paths, and fuzzed (`fuzz/fuzz_targets/http_head.rs`).

use secureops_audit::Via;

use crate::peek::PeekedHost;
use crate::peek::http_head::{Head, split_authority};
use crate::refusal::Refusal;

/// The destination of a `CONNECT host:port` request (the port is required).
///
/// # Errors
/// [`Refusal::Malformed`] for a target that is not `host:port`.
pub fn connect_destination(head: &Head) -> Result<PeekedHost, Refusal> {
    match split_authority(&head.target) {
        Ok((host, Some(port))) => Ok(PeekedHost {
            host: host.to_owned(),
            port,
            via: Via::Connect,
        }),
        Ok((_, None)) => Err(Refusal::Malformed("CONNECT target needs a port".into())),
        Err(e) => Err(Refusal::Malformed(e.to_string())),
    }
}

/// A plain HTTP request's destination, the authority to send as `Host` and
/// the origin-form path. `transparent_port` is the original destination
/// port of a redirected connection (`None` on the explicit proxy, where the
/// request must be absolute-form and its port defaults to 80).
///
/// # Errors
/// [`Refusal::Malformed`] for anything but an `http://` absolute-form URL
/// (explicit) or exactly one `Host` header agreeing with the target
/// (redirected).
pub fn http_destination(head: &Head, transparent_port: Option<u16>) -> Result<(PeekedHost, String, String), Refusal> {
    let (authority, path) = match transparent_port {
        None => split_target(&head.target).map(|(a, p)| (a.to_owned(), p))?,
        Some(_) => transparent_target(head)?,
    };
    let (host, port) = split_authority(&authority).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let peeked = match transparent_port {
        None => PeekedHost {
            host: host.to_owned(),
            port: port.unwrap_or(80),
            via: Via::Http,
        },
        // The connection goes where the client dialled: its port decides.
        Some(port) => PeekedHost {
            host: host.to_owned(),
            port,
            via: Via::HostHeader,
        },
    };
    Ok((peeked, authority, path))
}

/// Splits an absolute-form target into authority and origin-form path.
///
/// # Errors
/// [`Refusal::Malformed`] for origin-form targets and schemes other than
/// `http://`.
pub fn split_target(target: &str) -> Result<(&str, String), Refusal> {
    let rest = match target.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &target[7..],
        _ if target.starts_with('/') => {
            return Err(Refusal::Malformed(
                "origin-form request: this is a proxy, send absolute-form (http://host/path)".into(),
            ));
        }
        _ => {
            return Err(Refusal::Malformed(
                "only http:// URLs are proxied this way; use CONNECT for https".into(),
            ));
        }
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // A fragment is never sent on the wire.
    let path = path.split('#').next().unwrap_or_default();
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok((authority, path))
}

/// The authority and origin-form path of a redirected request: exactly one
/// `Host` header; an absolute-form target must name the same host.
///
/// # Errors
/// [`Refusal::Malformed`] when the `Host` header is missing, repeated, not
/// text, or disagrees with an absolute-form target.
pub fn transparent_target(head: &Head) -> Result<(String, String), Refusal> {
    let mut hosts = head.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("host"));
    let (Some((_, host)), None) = (hosts.next(), hosts.next()) else {
        return Err(Refusal::Malformed("exactly one Host header is required".into()));
    };
    let host = std::str::from_utf8(host)
        .map_err(|_| Refusal::Malformed("Host header is not text".into()))?
        .trim();
    if head.target.starts_with('/') {
        return Ok((host.to_owned(), head.target.clone()));
    }
    let (authority, path) = split_target(&head.target)?;
    if !authority.eq_ignore_ascii_case(host) {
        return Err(Refusal::Malformed(
            "request target and Host header name different hosts".into(),
        ));
    }
    Ok((host.to_owned(), path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peek::http_head::parse_request;

    #[test]
    fn targets() {
        let ok = |t: &str| split_target(t).ok().map(|(a, p)| (a.to_owned(), p));
        assert_eq!(ok("http://a.test/x?y"), Some(("a.test".into(), "/x?y".into())));
        assert_eq!(ok("HTTP://a.test"), Some(("a.test".into(), "/".into())));
        assert_eq!(ok("http://a.test:8080?q"), Some(("a.test:8080".into(), "/?q".into())));
        assert_eq!(ok("http://a.test#f"), Some(("a.test".into(), "/".into())));
        assert!(split_target("/x").is_err());
        assert!(split_target("https://a.test/").is_err());
        assert!(split_target("ftp://a.test/").is_err());
    }

    #[test]
    fn destinations() {
        let head = |s: &str| parse_request(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        let connect = connect_destination(&head("CONNECT a.test:8443 HTTP/1.1\r\n\r\n"));
        assert_eq!(connect.map(|p| (p.host, p.port)), Ok(("a.test".into(), 8443)));
        assert!(connect_destination(&head("CONNECT a.test HTTP/1.1\r\n\r\n")).is_err());
        let (p, auth, path) = http_destination(&head("GET http://a.test/x HTTP/1.1\r\n\r\n"), None).unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, auth.as_str(), path.as_str()),
            ("a.test", 80, "a.test", "/x")
        );
        let redirected = head("GET /x HTTP/1.1\r\nHost: a.test:8080\r\n\r\n");
        let (p, _, _) = http_destination(&redirected, Some(81)).unwrap();
        assert_eq!((p.host.as_str(), p.port, p.via), ("a.test", 81, Via::HostHeader));
        let two = head("GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n");
        assert!(http_destination(&two, Some(80)).is_err());
    }
}
