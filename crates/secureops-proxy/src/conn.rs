//! A client or upstream stream with the bytes read ahead of the parser.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::peek::http_head::{Head, HeadError, MAX_HEAD};

/// A TCP stream plus its read-ahead buffer (bounded by the callers).
#[derive(Debug)]
pub(crate) struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// Longest wait for one read or write before the peer counts as gone.
    pub idle: Duration,
    /// Refusals are a TCP reset, not an HTTP response (redirected
    /// connections: the client never chose to talk to a proxy).
    pub reset_on_refusal: bool,
}

/// Reading a head failed.
#[derive(Debug)]
pub(crate) enum ReadHeadError {
    /// The peer closed before sending any byte of a head.
    Closed,
    /// The peer closed in the middle of a head.
    Truncated,
    /// The bytes are not a valid head.
    Head(HeadError),
    /// Socket error.
    Io(std::io::Error),
}

impl Conn {
    pub fn new(stream: TcpStream, idle: Duration) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            idle,
            reset_on_refusal: false,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream. A read
    /// that waits longer than `idle` is an error.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8192);
        }
        tokio::time::timeout(self.idle, self.stream.read_buf(&mut self.buf))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Reads until `parse` finds a complete head, then consumes it and
    /// returns it with its raw bytes.
    pub async fn read_head(
        &mut self,
        parse: fn(&[u8]) -> Result<Head, HeadError>,
    ) -> Result<(Head, Bytes), ReadHeadError> {
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf) {
                    Ok(head) => {
                        let raw = self.buf.split_to(head.len).freeze();
                        return Ok((head, raw));
                    }
                    Err(HeadError::Incomplete) => {}
                    Err(e) => return Err(ReadHeadError::Head(e)),
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(ReadHeadError::Head(HeadError::TooLarge));
                }
            }
            match self.fill().await {
                Ok(0) if self.buf.is_empty() => return Err(ReadHeadError::Closed),
                Ok(0) => return Err(ReadHeadError::Truncated),
                Ok(_) => {}
                Err(e) => return Err(ReadHeadError::Io(e)),
            }
        }
    }

    /// Reads one CRLF-terminated line (at most `max` bytes), consuming it.
    pub async fn read_line(&mut self, max: usize) -> std::io::Result<BytesMut> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(self.buf.split_to(pos + 1));
            }
            if self.buf.len() > max {
                return Err(invalid("line too long"));
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Copies exactly `n` bytes (buffered first, then from the socket) to `dst`.
    pub async fn copy_exact(&mut self, mut n: u64, dst: &mut TcpStream) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            write_all(dst, &self.buf[..take], self.idle).await?;
            self.buf.advance(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Copies everything until end of stream to `dst`.
    pub async fn copy_to_end(&mut self, dst: &mut TcpStream) -> std::io::Result<()> {
        loop {
            if !self.buf.is_empty() {
                write_all(dst, &self.buf, self.idle).await?;
                self.buf.clear();
            }
            if self.fill().await? == 0 {
                return Ok(());
            }
        }
    }

    /// Copies one chunked body verbatim (chunks, last chunk, trailers),
    /// checking its framing so that the end of the message is known.
    pub async fn copy_chunked(&mut self, dst: &mut TcpStream) -> std::io::Result<()> {
        const MAX_LINE: usize = 4096;
        loop {
            let line = self.read_line(MAX_LINE).await?;
            let size = chunk_size(&line)?;
            write_all(dst, &line, self.idle).await?;
            if size == 0 {
                // Trailer section, ending with an empty line.
                let mut total = 0;
                loop {
                    let t = self.read_line(MAX_LINE).await?;
                    total += t.len();
                    if total > MAX_HEAD {
                        return Err(invalid("trailers too large"));
                    }
                    if !t.ends_with(b"\r\n") || t[..t.len() - 2].iter().any(|&b| b == b'\r' || b == 0) {
                        return Err(invalid("malformed trailer line"));
                    }
                    write_all(dst, &t, self.idle).await?;
                    if t.as_ref() == b"\r\n" {
                        return Ok(());
                    }
                }
            }
            self.copy_exact(size, dst).await?;
            let crlf = self.read_line(2).await?;
            if crlf.as_ref() != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF"));
            }
            write_all(dst, &crlf, self.idle).await?;
        }
    }
}

/// Sends a final response and closes without losing it: shut down our
/// side, then read and discard what the client still sends (a request body
/// we refused) for a short while, so the kernel does not answer the unread
/// bytes with a reset that destroys the response in flight.
pub(crate) async fn respond_and_close(stream: &mut TcpStream, response: &[u8], idle: Duration) {
    if write_all(stream, response, idle).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    let linger = async {
        let mut sink = [0u8; 4096];
        let mut left: usize = 256 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), linger).await;
}

/// `write_all` that gives up when the peer stops reading for `idle`.
pub(crate) async fn write_all(dst: &mut TcpStream, bytes: &[u8], idle: Duration) -> std::io::Result<()> {
    tokio::time::timeout(idle, dst.write_all(bytes))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

fn invalid(msg: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Parses a chunk-size line: hex digits, optional `;extensions`, CRLF.
fn chunk_size(line: &[u8]) -> std::io::Result<u64> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or_else(|| invalid("chunk size line without CRLF"))?;
    // A bare CR or other control byte in an extension is read differently
    // by different parsers: refuse it rather than pass it on.
    if line.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
        return Err(invalid("control byte in chunk extension"));
    }
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("invalid chunk size"));
    }
    let s = std::str::from_utf8(hex).map_err(|_| invalid("invalid chunk size"))?;
    u64::from_str_radix(s, 16).map_err(|_| invalid("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::chunk_size;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a\r\n").unwrap(), 26);
        assert_eq!(chunk_size(b"0;ext=1\r\n").unwrap(), 0);
        assert!(chunk_size(b"zz\r\n").is_err());
        assert!(chunk_size(b"1a\n").is_err());
        assert!(chunk_size(b"\r\n").is_err());
        assert!(chunk_size(b"-1\r\n").is_err());
        assert!(chunk_size(b"5;a\rb\r\n").is_err());
        assert!(chunk_size(b"ffffffffffffffffff\r\n").is_err());
    }
}
