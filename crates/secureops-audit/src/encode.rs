//! Turns findings into chained, optionally signed lines.

use std::borrow::Cow;
use std::fmt::Write as _;

use ed25519_dalek::SigningKey;

use crate::chain::{HeadSigner, fingerprint_of, hex_into, pubkey_b64, sha256, sign_head};
use crate::entry::{Entry, EntryKind, MAX_LINE};
use crate::error::AuditError;
use crate::finding::AuditFinding;
use crate::resume::ChainHead;

/// What a line is about.
pub(crate) enum Body<'a> {
    /// A decision.
    Finding(&'a AuditFinding),
    /// The log (re)starts.
    Start { reason: &'a str, detail: Option<&'a str> },
    /// The log is closed (or rotated away).
    Stop { reason: &'a str },
}

/// Holds the key and scratch strings; reused for every line so that encoding
/// does not allocate.
pub(crate) struct Encoder {
    key: HeadSigner,
    pubkey: String,
    fingerprint: String,
    version: String,
    own_pid: u32,
    own_exe: Option<String>,
    ts: String,
    prev_hex: String,
    sig_b64: String,
}

impl Encoder {
    pub(crate) fn new(key: SigningKey, version: String) -> Self {
        let verifying = key.verifying_key();
        Encoder {
            pubkey: pubkey_b64(&verifying),
            fingerprint: fingerprint_of(&verifying),
            key: HeadSigner::new(&key),
            version,
            own_pid: std::process::id(),
            own_exe: std::env::current_exe().ok().map(|p| p.to_string_lossy().into_owned()),
            ts: String::with_capacity(32),
            prev_hex: String::with_capacity(64),
            sig_b64: String::with_capacity(88),
        }
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Takes the current time for the next lines. One timestamp per group:
    /// the entries of a group are committed together.
    pub(crate) fn stamp(&mut self) {
        self.ts.clear();
        // Fixed microsecond precision, always `Z`.
        let _ = write!(self.ts, "{:.6}", jiff::Timestamp::now());
    }

    /// Appends one line (with its newline) to `out` and advances `head`.
    /// Returns the line's `seq`. On error nothing is appended.
    pub(crate) fn push(
        &mut self,
        head: &mut ChainHead,
        out: &mut Vec<u8>,
        body: Body<'_>,
        sign: bool,
    ) -> Result<u64, AuditError> {
        let start = out.len();
        hex_into(&head.prev, &mut self.prev_hex);
        let seq = head.next_seq;
        let mut entry = Entry {
            count: None,
            decision: None,
            detail: None,
            exe: None,
            fingerprint: None,
            host: None,
            kind: EntryKind::Start,
            pid: None,
            port: None,
            prev: Cow::Borrowed(&self.prev_hex),
            pubkey: None,
            qtype: None,
            reason: Cow::Borrowed(""),
            seq,
            sig: None,
            status: None,
            ts: Cow::Borrowed(&self.ts),
            version: None,
            via: None,
        };
        let sign = match body {
            Body::Finding(f) => {
                entry.kind = f.kind.into();
                entry.decision = Some(f.decision);
                entry.reason = Cow::Borrowed(&f.reason);
                entry.host = f.host.as_deref().map(Cow::Borrowed);
                entry.port = f.port;
                entry.via = f.via;
                entry.pid = f.pid;
                entry.exe = f.exe.as_deref().map(Cow::Borrowed);
                entry.status = f.status;
                entry.qtype = f.qtype.as_deref().map(Cow::Borrowed);
                entry.detail = f.detail.as_deref().map(Cow::Borrowed);
                sign
            }
            Body::Start { reason, detail } => {
                entry.kind = EntryKind::Start;
                entry.reason = Cow::Borrowed(reason);
                entry.detail = detail.map(Cow::Borrowed);
                entry.pid = Some(self.own_pid);
                entry.exe = self.own_exe.as_deref().map(Cow::Borrowed);
                entry.pubkey = Some(Cow::Borrowed(&self.pubkey));
                entry.fingerprint = Some(Cow::Borrowed(&self.fingerprint));
                entry.version = Some(Cow::Borrowed(&self.version));
                true
            }
            Body::Stop { reason } => {
                entry.kind = EntryKind::Stop;
                entry.reason = Cow::Borrowed(reason);
                entry.count = Some(seq + 1);
                true
            }
        };
        let encoded = encode(&entry, out, start).and_then(|()| {
            let chain_head = sha256(&out[start..]);
            if !sign {
                return Ok(chain_head);
            }
            sign_head(&self.key, &chain_head, &mut self.sig_b64);
            entry.sig = Some(Cow::Borrowed(&self.sig_b64));
            out.truncate(start);
            encode(&entry, out, start)?;
            Ok(sha256(&out[start..]))
        });
        match encoded {
            Ok(hash) => {
                out.push(b'\n');
                head.prev = hash;
                head.next_seq = seq + 1;
                Ok(seq)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}

fn encode(entry: &Entry<'_>, out: &mut Vec<u8>, start: usize) -> Result<(), AuditError> {
    // Serialising our own types into a Vec cannot fail; if it ever did, the
    // finding is refused like an oversized one.
    entry
        .write_json(out)
        .map_err(|_| AuditError::EntryTooLarge { len: usize::MAX })?;
    let len = out.len() - start;
    if len > MAX_LINE - 1 {
        return Err(AuditError::EntryTooLarge { len });
    }
    Ok(())
}
