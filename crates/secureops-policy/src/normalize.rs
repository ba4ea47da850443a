//! Host normalisation: one canonical form for every host the proxy sees.
//!
//! Rules and requests are both put through [`normalize_host`], so matching
//! can compare strings and addresses directly. Anything that is neither a
//! valid DNS name nor a canonical IP literal is an error, and the caller
//! denies it (fail-closed).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest DNS label, in bytes (RFC 1035).
const MAX_LABEL: usize = 63;
/// Longest DNS name without the root dot, in bytes (RFC 1035).
const MAX_NAME: usize = 253;

/// Longest input looked at. IDNA drops some code points (soft hyphen,
/// zero-width joiner), so the input may be longer than the name, but not
/// this much: bigger inputs are refused before any work is done.
const MAX_INPUT: usize = 1024;

/// Every printable ASCII character that is not a letter, digit, `-`, `.` or
/// `_`, plus space and controls (`true`). Unlike `AsciiDenyList::STD3` this
/// lets `_` through, because real names such as `_acme-challenge.x` use it.
const DENY: AsciiDenyList = AsciiDenyList::new(true, "!\"#$%&'()*+,/:;<=>?@[\\]^`{|}~");

/// A normalised host: a lower-case ASCII DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lower case, punycode, no trailing dot.
    Name(String),
    /// An IP address. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is stored as IPv4.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a host was refused by [`normalize_host`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Nothing left once a trailing dot is removed (`""`, `"."`).
    #[error("empty host")]
    Empty,
    /// A character that no DNS name may contain (`@`, space, `%`, `/`, controls...).
    #[error("invalid character {0:?}")]
    InvalidCharacter(char),
    /// Two dots in a row, or a leading dot.
    #[error("empty label")]
    EmptyLabel,
    /// A label longer than 63 bytes.
    #[error("label too long")]
    LabelTooLong,
    /// A name longer than 253 bytes.
    #[error("name too long")]
    NameTooLong,
    /// A label that starts or ends with `-`.
    #[error("label starts or ends with a hyphen")]
    Hyphen,
    /// A number that is not a canonical dotted quad (`2130706433`, `0x7f.1`, `127.1`).
    #[error("non-canonical numeric host")]
    NonCanonicalNumeric,
    /// Text with `:` or brackets that is not an IPv6 address.
    #[error("invalid IPv6 address")]
    InvalidIpv6,
    /// An IPv6 zone identifier (`fe80::1%eth0`): local to one machine.
    #[error("IPv6 zone identifiers are not allowed")]
    ZoneId,
    /// An internationalised name that IDNA (UTS 46) refuses.
    #[error("invalid internationalised name")]
    Idna,
}

/// Normalises a host as it appears in a CONNECT line, URL, SNI or `Host`
/// header (without the port).
///
/// Lower-cases, strips one trailing dot, converts internationalised names to
/// punycode and checks the result is a DNS name: labels of 1..=63 bytes of
/// letters, digits, `-` (not at either end) and `_`, 253 bytes at most. `_`
/// is accepted because real names (`_acme-challenge.example.com`, SRV-style
/// names) use it; it cannot smuggle anything past the matcher.
///
/// A canonical dotted quad or an IPv6 literal (with or without brackets)
/// becomes [`Host::Ip`]. A name whose last label is a number (`127.1`,
/// `0x7f.1`, `2130706433`) is an IPv4 attempt, as in the WHATWG URL host
/// parser, and is refused unless it is a canonical dotted quad: other
/// software would read it as an address we never vetted.
///
/// The result is a fixed point: normalising its [`Display`](fmt::Display)
/// form gives it back.
pub fn normalize_host(raw: &str) -> Result<Host, HostError> {
    if raw.len() > MAX_INPUT {
        return Err(HostError::NameTooLong);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(HostError::InvalidIpv6)?;
        return parse_ipv6(inner);
    }
    if raw.contains(':') {
        // `example.com:443` is a name with a port, not an IPv6 attempt.
        let addr = raw.split('%').next().unwrap_or(raw);
        if !addr.bytes().all(|b| b.is_ascii_hexdigit() || b":.".contains(&b)) {
            return Err(HostError::InvalidCharacter(':'));
        }
        return parse_ipv6(raw);
    }
    normalize_name(raw)
}

fn parse_ipv6(text: &str) -> Result<Host, HostError> {
    if let Some((addr, _zone)) = text.split_once('%') {
        return Err(match addr.parse::<Ipv6Addr>() {
            Ok(_) => HostError::ZoneId,
            Err(_) => HostError::InvalidIpv6,
        });
    }
    let ip: Ipv6Addr = text.parse().map_err(|_| HostError::InvalidIpv6)?;
    // One destination, one form: `::ffff:10.0.0.1` is 10.0.0.1 on the wire.
    Ok(Host::Ip(IpAddr::V6(ip).to_canonical()))
}

fn normalize_name(raw: &str) -> Result<Host, HostError> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    // Precise errors for the usual suspects before IDNA's generic one.
    if let Some(bad) = name.chars().find(|&c| c.is_ascii() && !is_name_char(c as u8)) {
        return Err(HostError::InvalidCharacter(bad));
    }
    let ascii = Uts46::new()
        .to_ascii(name.as_bytes(), DENY, Hyphens::Allow, DnsLength::Ignore)
        .map_err(|_| HostError::Idna)?;
    // IDNA maps some non-ASCII to ASCII (fullwidth `．`, `１`): check again.
    if let Some(bad) = ascii.bytes().find(|&b| !is_name_char(b)) {
        return Err(HostError::InvalidCharacter(char::from(bad)));
    }
    check_labels(&ascii)?;
    if ends_in_number(&ascii) {
        return canonical_ipv4(&ascii).map(|ip| Host::Ip(IpAddr::V4(ip)));
    }
    Ok(Host::Name(ascii.into_owned()))
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')
}

fn check_labels(name: &str) -> Result<(), HostError> {
    if name.len() > MAX_NAME {
        return Err(HostError::NameTooLong);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(HostError::LabelTooLong);
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::Hyphen);
        }
    }
    Ok(())
}

/// WHATWG "ends in a number": the last label is decimal digits or `0x` hex.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Only `a.b.c.d` with four decimal parts 0..=255 and no leading zeros.
fn canonical_ipv4(text: &str) -> Result<Ipv4Addr, HostError> {
    // std already refuses leading zeros; say so here too rather than rely on it.
    let leading_zero = text.split('.').any(|part| part.len() > 1 && part.starts_with('0'));
    if leading_zero {
        return Err(HostError::NonCanonicalNumeric);
    }
    text.parse().map_err(|_| HostError::NonCanonicalNumeric)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<Host, HostError> {
        Ok(Host::Name(s.to_owned()))
    }

    fn ip(s: &str) -> Result<Host, HostError> {
        Ok(Host::Ip(s.parse().unwrap()))
    }

    #[test]
    fn table() {
        use HostError::*;
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let name_253 = format!("{l}.{l}.{l}.{m}", l = long_label, m = "b".repeat(61));
        let name_254 = format!("{name_253}b");
        let huge = "a.".repeat(4096);
        // One row per case, aligned by hand.
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, Result<Host, HostError>)> = vec![
            ("plain", "example.com", name("example.com")),
            ("upper case", "ExAmPlE.COM", name("example.com")),
            ("trailing dot", "example.com.", name("example.com")),
            ("two trailing dots", "example.com..", Err(EmptyLabel)),
            ("leading dot", ".example.com", Err(EmptyLabel)),
            ("double dot", "a..b", Err(EmptyLabel)),
            ("single label", "localhost", name("localhost")),
            ("idn", "Bücher.DE.", name("xn--bcher-kva.de")),
            ("idn already ascii", "xn--bcher-kva.de", name("xn--bcher-kva.de")),
            ("bad punycode", "xn--a.com", Err(Idna)),
            ("underscore", "_acme-challenge.Example.com", name("_acme-challenge.example.com")),
            ("hyphen inside", "a-b.com", name("a-b.com")),
            ("double hyphen inside", "r3---sn-abc.googlevideo.com", name("r3---sn-abc.googlevideo.com")),
            ("leading hyphen", "-a.com", Err(Hyphen)),
            ("trailing hyphen", "a-.com", Err(Hyphen)),
            ("label 63", &long_label, name(&long_label)),
            ("label 64", &too_long_label, Err(LabelTooLong)),
            ("name 253", &name_253, name(&name_253)),
            ("name 254", &name_254, Err(NameTooLong)),
            ("huge input", &huge, Err(NameTooLong)),
            ("soft hyphens dropped", "exa\u{ad}mple.com", name("example.com")),
            ("digits inside name", "123.example.com", name("123.example.com")),
            ("hex-looking first label", "0x7f.example", name("0x7f.example")),
            ("not hex last label", "a.0xg", name("a.0xg")),
            ("empty", "", Err(Empty)),
            ("lone dot", ".", Err(Empty)),
            ("at sign", "user@example.com", Err(InvalidCharacter('@'))),
            ("space", "exa mple.com", Err(InvalidCharacter(' '))),
            ("tab", "example.com\t", Err(InvalidCharacter('\t'))),
            ("nul", "example\0.com", Err(InvalidCharacter('\0'))),
            ("del", "example\x7f.com", Err(InvalidCharacter('\x7f'))),
            ("percent", "ex%41mple.com", Err(InvalidCharacter('%'))),
            ("slash", "example.com/x", Err(InvalidCharacter('/'))),
            ("backslash", "example.com\\x", Err(InvalidCharacter('\\'))),
            ("star", "*.example.com", Err(InvalidCharacter('*'))),
            ("fullwidth at", "a\u{ff20}b.com", Err(Idna)),
            // numeric tricks
            ("ipv4", "203.0.113.7", ip("203.0.113.7")),
            ("ipv4 trailing dot", "203.0.113.7.", ip("203.0.113.7")),
            ("decimal", "2130706433", Err(NonCanonicalNumeric)),
            ("hex", "0x7f000001", Err(NonCanonicalNumeric)),
            ("hex upper", "0X7F000001", Err(NonCanonicalNumeric)),
            ("hex parts", "0x7f.1", Err(NonCanonicalNumeric)),
            ("bare 0x", "a.0x", Err(NonCanonicalNumeric)),
            ("octal", "0177.0.0.1", Err(NonCanonicalNumeric)),
            ("short", "127.1", Err(NonCanonicalNumeric)),
            ("five parts", "1.2.3.4.5", Err(NonCanonicalNumeric)),
            ("leading zero", "01.2.3.4", Err(NonCanonicalNumeric)),
            ("leading zero last", "1.2.3.04", Err(NonCanonicalNumeric)),
            ("octet too big", "1.2.3.256", Err(NonCanonicalNumeric)),
            ("name then number", "example.com.1", Err(NonCanonicalNumeric)),
            ("fullwidth digits", "\u{ff11}\u{ff12}\u{ff17}.0.0.1", ip("127.0.0.1")),
            ("fullwidth short", "\u{ff11}\u{ff12}\u{ff17}.1", Err(NonCanonicalNumeric)),
            // IPv6
            ("ipv6 bracketed", "[2001:DB8::1]", ip("2001:db8::1")),
            ("ipv6 bare", "2001:db8::1", ip("2001:db8::1")),
            ("ipv6 loopback", "[::1]", ip("::1")),
            ("ipv6 mapped", "[::ffff:10.0.0.1]", ip("10.0.0.1")),
            ("ipv6 mapped hex", "::ffff:a00:1", ip("10.0.0.1")),
            ("ipv6 nat64 stays v6", "64:ff9b::a00:1", ip("64:ff9b::a00:1")),
            ("ipv6 zone", "fe80::1%eth0", Err(ZoneId)),
            ("ipv6 zone bracketed", "[fe80::1%25eth0]", Err(ZoneId)),
            ("ipv4 in brackets", "[127.0.0.1]", Err(InvalidIpv6)),
            ("unclosed bracket", "[::1", Err(InvalidIpv6)),
            ("host with port", "example.com:443", Err(InvalidCharacter(':'))),
            ("ipv4 with port", "1.2.3.4:443", Err(InvalidIpv6)),
            ("bad ipv6", "2001:db8:::1", Err(InvalidIpv6)),
            ("empty brackets", "[]", Err(InvalidIpv6)),
        ];
        for (case, input, want) in cases {
            assert_eq!(normalize_host(input), want, "case {case:?}: {input:?}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(normalize_host("[2001:db8::1]").unwrap().to_string(), "2001:db8::1");
        assert_eq!(normalize_host("Example.COM.").unwrap().to_string(), "example.com");
    }

    #[test]
    fn idempotent_on_table_outputs() {
        for raw in ["Bücher.DE.", "[::ffff:10.0.0.1]", "[2001:DB8::1]", "_x.Y.", "1.2.3.4."] {
            let once = normalize_host(raw).unwrap();
            assert_eq!(normalize_host(&once.to_string()).unwrap(), once, "{raw}");
        }
    }
}
