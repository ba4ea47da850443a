//! Server Name Indication from a TLS ClientHello, without terminating TLS.
//!
//! Modelled on linkerd's `client_hello.rs`: a pure function over the bytes
//! read so far that says "need more", "not TLS", "malformed" or gives the
//! name. Post-quantum key shares make ClientHellos ~2 KB, so a hello often
//! spans several TCP segments *and* several TLS records; the caller keeps
//! reading until this returns something other than [`SniError::Incomplete`].

/// The largest ClientHello we are willing to buffer (TLS caps a handshake
/// message far higher; real hellos are below 3 KB).
pub const MAX_HELLO: usize = 16 * 1024;

const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const NAME_TYPE_HOST: u8 = 0x00;

/// Why no server name could be read (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// The bytes so far are a valid prefix of a ClientHello; read more.
    #[error("incomplete TLS ClientHello")]
    Incomplete,
    /// The bytes do not start a TLS handshake record.
    #[error("not a TLS ClientHello")]
    NotTls,
    /// The bytes start a TLS handshake but are not a well-formed ClientHello.
    #[error("malformed TLS ClientHello")]
    Malformed,
    /// The ClientHello is larger than [`MAX_HELLO`].
    #[error("TLS ClientHello larger than {MAX_HELLO} bytes")]
    TooLarge,
}

/// Returns the SNI host name of the ClientHello at the start of `buf`
/// (`Ok(None)` for a complete hello without SNI).
///
/// The name is returned as sent; callers normalise it like any other host.
pub fn parse_sni(buf: &[u8]) -> Result<Option<String>, SniError> {
    let hello = reassemble(buf)?;
    parse_client_hello(&hello)
}

/// Returns true when `buf` starts like a TLS handshake record (the first
/// byte is enough to route a connection to the SNI parser).
pub fn looks_like_tls(buf: &[u8]) -> bool {
    buf.first() == Some(&CONTENT_HANDSHAKE)
}

/// Concatenates the handshake-record payloads until the whole ClientHello
/// message (4-byte header + body) is present.
fn reassemble(mut buf: &[u8]) -> Result<Vec<u8>, SniError> {
    let mut msg = Vec::new();
    loop {
        let Some((&ctype, rest)) = buf.split_first() else {
            return Err(SniError::Incomplete);
        };
        if ctype != CONTENT_HANDSHAKE {
            return Err(if msg.is_empty() {
                SniError::NotTls
            } else {
                SniError::Malformed
            });
        }
        if rest.len() < 4 {
            // Check what we have of the version: major must be 3.
            if rest.first().is_some_and(|&major| major != 3) {
                return Err(SniError::NotTls);
            }
            return Err(SniError::Incomplete);
        }
        if rest[0] != 3 {
            return Err(SniError::NotTls);
        }
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len == 0 || len > 16384 + 2048 {
            return Err(SniError::Malformed);
        }
        let body = &rest[4..];
        let take = len.min(body.len());
        msg.extend_from_slice(&body[..take]);
        if msg.len() > MAX_HELLO {
            return Err(SniError::TooLarge);
        }
        if msg.len() >= 4 {
            if msg[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(SniError::NotTls);
            }
            let need = 4 + (usize::from(msg[1]) << 16 | usize::from(msg[2]) << 8 | usize::from(msg[3]));
            if need > MAX_HELLO {
                return Err(SniError::TooLarge);
            }
            if msg.len() >= need {
                msg.truncate(need);
                return Ok(msg);
            }
        }
        if take < len {
            return Err(SniError::Incomplete);
        }
        buf = &body[len..];
    }
}

/// A bounds-checked reader over the hello; every short read is `Malformed`
/// because the message length has already been checked to be complete.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SniError> {
        if self.0.len() < n {
            return Err(SniError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, SniError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SniError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Result<&'a [u8], SniError> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Result<&'a [u8], SniError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn parse_client_hello(msg: &[u8]) -> Result<Option<String>, SniError> {
    let mut r = Reader(msg.get(4..).ok_or(SniError::Malformed)?);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut exts = Reader(r.vec16()?);
    let mut found = None;
    while !exts.0.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty != EXT_SERVER_NAME {
            continue;
        }
        if found.is_some() {
            return Err(SniError::Malformed); // duplicate extension
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == NAME_TYPE_HOST {
                if found.is_some() || name.is_empty() {
                    return Err(SniError::Malformed);
                }
                // Non-ASCII or control bytes are left for host normalisation
                // to reject; here only require UTF-8.
                let name = std::str::from_utf8(name).map_err(|_| SniError::Malformed)?;
                found = Some(name.to_owned());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a ClientHello with the given SNI and `pad` bytes of an opaque
    /// extension (to emulate the ~2 KB post-quantum hellos), split into TLS
    /// records of at most `record` bytes.
    pub(crate) fn client_hello(sni: Option<&str>, pad: usize, record: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let n = name.len() as u16;
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(n + 5).to_be_bytes());
            exts.extend_from_slice(&(n + 3).to_be_bytes());
            exts.push(0);
            exts.extend_from_slice(&n.to_be_bytes());
            exts.extend_from_slice(name.as_bytes());
        }
        if pad > 0 {
            exts.extend_from_slice(&0x0015u16.to_be_bytes()); // padding
            exts.extend_from_slice(&(pad as u16).to_be_bytes());
            exts.extend(std::iter::repeat_n(0u8, pad));
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        let len = body.len() as u32;
        msg.extend_from_slice(&len.to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let mut out = Vec::new();
        for chunk in msg.chunks(record) {
            out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn reads_sni_from_one_record() {
        let hello = client_hello(Some("example.com"), 0, 16384);
        assert_eq!(parse_sni(&hello), Ok(Some("example.com".into())));
    }

    #[test]
    fn no_sni_is_none() {
        let hello = client_hello(None, 100, 16384);
        assert_eq!(parse_sni(&hello), Ok(None));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        // A 2 KB hello split across records of 700 bytes: every strict
        // prefix must ask for more, never fail or guess.
        let hello = client_hello(Some("big.example.com"), 1800, 700);
        for n in 0..hello.len() {
            assert_eq!(parse_sni(&hello[..n]), Err(SniError::Incomplete), "prefix {n}");
        }
        assert_eq!(parse_sni(&hello), Ok(Some("big.example.com".into())));
    }

    #[test]
    fn trailing_application_bytes_are_ignored() {
        let mut hello = client_hello(Some("a.test"), 0, 16384);
        hello.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        assert_eq!(parse_sni(&hello), Ok(Some("a.test".into())));
    }

    #[test]
    fn not_tls() {
        assert_eq!(parse_sni(b"GET / HTTP/1.1\r\n"), Err(SniError::NotTls));
        assert_eq!(parse_sni(b"SSH-2.0-OpenSSH_9.2\r\n"), Err(SniError::NotTls));
        assert_eq!(parse_sni(&[0x16, 9]), Err(SniError::NotTls));
    }

    #[test]
    fn lies_about_lengths_are_malformed() {
        let mut hello = client_hello(Some("example.com"), 0, 16384);
        // Make the SNI list length claim more than the extension holds.
        let pos = hello.windows(11).position(|w| w == b"example.com").unwrap_or(0);
        hello[pos - 5] = 0xff;
        assert_eq!(parse_sni(&hello), Err(SniError::Malformed));
    }

    #[test]
    fn oversized_hello_is_refused() {
        let mut rec = vec![
            CONTENT_HANDSHAKE,
            3,
            1,
            0x40,
            0x00,
            HANDSHAKE_CLIENT_HELLO,
            0x01,
            0x00,
            0x00,
        ];
        rec.resize(5 + 0x4000, 0);
        assert_eq!(parse_sni(&rec), Err(SniError::TooLarge));
    }
}
