//! `audit verify`: re-derives every hash and checks every signature.
//!
//! Lines are streamed (a log may be large). On the first fault the verifier
//! looks ahead only to name the fault precisely: a forward `seq` jump whose
//! missing entry turns up later is a reorder, not a gap; and a broken `prev`
//! after an unsigned line is blamed on that earlier line when the following
//! lines up to the next signature prove the `prev` itself authentic.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;

use ed25519_dalek::VerifyingKey;

use crate::anchor::Anchor;
use crate::chain::{GENESIS, decode_pubkey, decode_sig, fingerprint_of, parse_hex32, sha256, verify_head};
use crate::entry::{Entry, EntryKind, MAX_LINE};

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines checked, over all files.
    pub entries: u64,
    /// Fingerprint of the key the log is signed with.
    pub fingerprint: String,
    /// `true` when that key was given (pinned); `false` when the key recorded
    /// in the first `start` entry was trusted (and, with an anchor, had to be
    /// the anchor's).
    pub key_pinned: bool,
    /// `true` when the last line is a `stop` entry.
    pub closed: bool,
    /// With an anchor: its `seq`, which the log reaches with the very line
    /// the anchor records.
    pub anchor_seq: Option<u64>,
}

/// The first bad line: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {fault}", file.display())]
pub struct VerifyError {
    /// The file holding the bad line.
    pub file: PathBuf,
    /// 1-based line number within `file`; 0 when the fault concerns the
    /// whole file (unreadable, empty).
    pub line: u64,
    /// What is wrong.
    pub fault: Fault,
}

/// Why verification failed. `Display` gives a short human reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// Not an entry of this format: bad JSON, wrong or missing fields, a
    /// field of the wrong kind, or not in canonical form.
    #[error("malformed entry: {0}")]
    Malformed(String),
    /// The last line has no trailing newline (cut short or truncated).
    #[error("torn last line: it has no trailing newline (a write cut short by a crash, or the file was truncated)")]
    TornLastLine,
    /// The signature does not verify against the log's key.
    #[error("bad signature: the line was modified after it was signed, or signed with another key")]
    BadSignature,
    /// A `start` or `stop` entry without a signature.
    #[error("start/stop entry is not signed")]
    MissingSignature,
    /// `prev` does not match the hash of the previous line.
    #[error("chain broken: prev does not match the hash of the previous line (lines were changed, added or removed)")]
    BrokenChain,
    /// This unsigned line was edited: the next line's `prev`, proven by a
    /// later signature, records a different hash for it.
    #[error("line was modified: it does not match the hash recorded by the next line")]
    Altered,
    /// Entries are missing before this line.
    #[error(
        "sequence gap: expected seq {expected}, found {found}: entries before this line are missing (deleted, or a file of the series not given)"
    )]
    SeqGap {
        /// The `seq` that should be here.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// Lines are out of order: the expected entry appears later.
    #[error("lines reordered: expected seq {expected}, found {found} (seq {expected} appears further down)")]
    Reorder {
        /// The `seq` that should be here (it appears further down).
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// An entry that was already seen appears again.
    #[error("duplicate entry: seq {seq} appears again (a copied or replayed line)")]
    Duplicate {
        /// The repeated `seq`.
        seq: u64,
    },
    /// Signed with another key than the pinned one (line 1) or than the rest
    /// of the log (a later `start` entry).
    #[error("wrong key: signed by {found}, expected {expected}")]
    WrongKey {
        /// Fingerprint of the expected key.
        expected: String,
        /// Fingerprint of the key in the log.
        found: String,
    },
    /// The first line is not a `start` entry.
    #[error("first entry is not a start entry")]
    NotStarted,
    /// An entry follows a `stop` without a new `start`.
    #[error("entry after stop without a new start")]
    AfterStop,
    /// `stop` reports another count than the entries in the log.
    #[error("stop entry counts {found} entries, the log has {expected}")]
    BadCount {
        /// Entries in the series up to and including the stop.
        expected: u64,
        /// The `count` field.
        found: u64,
    },
    /// The last entry is not a `stop` entry (pass `allow_open` for a log
    /// still being written).
    #[error(
        "not closed: the last entry is not a stop entry (the log was cut short, or its writer is still running or crashed)"
    )]
    NotClosed,
    /// Entries at the end are not covered by any signature.
    #[error("entries from line {first_unsigned_line} on are not covered by a signature")]
    UnsignedTail {
        /// 1-based line (in the error's file) of the first uncovered entry.
        first_unsigned_line: u64,
    },
    /// The log ends before the entry its anchor records: lines were cut
    /// off its end (e.g. back to an earlier `stop`, which looks complete).
    #[error(
        "log cut back: it ends at seq {last_seq}, but its anchor records entries up to seq {anchor_seq} (the entries after seq {last_seq} were removed)"
    )]
    EndsBeforeAnchor {
        /// `seq` the anchor records.
        anchor_seq: u64,
        /// `seq` of the log's last entry.
        last_seq: u64,
    },
    /// The entry at the anchor's `seq` is not the one the anchor records:
    /// the log was rewritten (and re-signed) up to here.
    #[error("entry seq {seq} is not the one its anchor records: the log was rewritten")]
    AnchorMismatch {
        /// The anchored `seq`.
        seq: u64,
    },
    /// The anchor is signed by another key than the pinned one, which the
    /// log itself is signed with (reported on the anchor file, line 0).
    #[error("the anchor is signed by {anchor}, not by the pinned key {pinned}")]
    AnchorKey {
        /// Fingerprint of the anchor's key.
        anchor: String,
        /// Fingerprint of the pinned key.
        pinned: String,
    },
    /// The file has no lines.
    #[error("empty log")]
    Empty,
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Io(String),
}

/// Checks a log series: `paths` in order, the chain continuing across files.
///
/// Without `pinned` the key in the first `start` entry is trusted (and
/// reported); with it, any other key is [`Fault::WrongKey`]. Unless
/// `allow_open`, the last line must be a `stop` entry.
///
/// # Errors
/// The first bad line, 1-based within its file.
pub fn verify(paths: &[PathBuf], pinned: Option<&VerifyingKey>, allow_open: bool) -> Result<VerifyReport, VerifyError> {
    verify_with_anchor(paths, pinned, allow_open, None)
}

/// [`verify`], and with an `anchor` (see the crate docs, "Anchor"), also:
/// without `pinned`, the anchor's key is pinned (so a log rewritten under a
/// new key fails with [`Fault::WrongKey`] on line 1); with it, the anchor
/// must be signed by that key ([`Fault::AnchorKey`]); and the series must
/// reach the anchor's `seq` ([`Fault::EndsBeforeAnchor`]) with the line the
/// anchor records ([`Fault::AnchorMismatch`]).
///
/// # Errors
/// The first bad line, 1-based within its file.
pub fn verify_with_anchor(
    paths: &[PathBuf],
    pinned: Option<&VerifyingKey>,
    allow_open: bool,
    anchor: Option<&Anchor>,
) -> Result<VerifyReport, VerifyError> {
    // An anchor by another key than the pinned one says nothing about the
    // log: the log is checked without it, then the anchor fails.
    let foreign = anchor.filter(|a| pinned.is_some_and(|p| p != a.key()));
    let anchor = anchor.filter(|_| foreign.is_none());
    let key_pinned = pinned.is_some();
    let pinned = pinned.or(anchor.map(Anchor::key));
    let Some(first_path) = paths.first() else {
        return Err(VerifyError {
            file: PathBuf::new(),
            line: 0,
            fault: Fault::Empty,
        });
    };
    let at = |pos: Pos, fault: Fault| VerifyError {
        file: paths.get(pos.file).unwrap_or(first_path).clone(),
        line: pos.line,
        fault,
    };
    let mut lines = Lines::new(paths);
    let mut v = Verifier::new(pinned);
    let mut last = Pos { file: 0, line: 0 };
    while let Some(line) = lines.next().map_err(|(pos, f)| at(pos, f))? {
        let pos = line.pos;
        if line.too_long {
            return Err(at(pos, Fault::Malformed(format!("line longer than {MAX_LINE} bytes"))));
        }
        if !line.complete {
            return Err(at(pos, Fault::TornLastLine));
        }
        if let Err(fault) = v.check(pos, &lines.buf) {
            let current = lines.buf.clone();
            let (pos, fault) = refine(&v, pos, &current, fault, &mut lines);
            return Err(at(pos, fault));
        }
        if let Some(anchor) = anchor
            && Some(v.expected_seq) == anchor.seq().checked_add(1)
            && v.prev != anchor.head()
        {
            return Err(at(pos, Fault::AnchorMismatch { seq: anchor.seq() }));
        }
        last = pos;
    }
    if let (Some(foreign), Some(pinned)) = (foreign, pinned) {
        return Err(VerifyError {
            file: foreign.file().to_owned(),
            line: 0,
            fault: Fault::AnchorKey {
                anchor: foreign.fingerprint(),
                pinned: fingerprint_of(pinned),
            },
        });
    }
    let last_seq = v.expected_seq.saturating_sub(1);
    if let Some(anchor) = anchor
        && last_seq < anchor.seq()
    {
        return Err(at(
            last,
            Fault::EndsBeforeAnchor {
                anchor_seq: anchor.seq(),
                last_seq,
            },
        ));
    }
    if let Some(first) = v.uncovered {
        return Err(at(
            first,
            Fault::UnsignedTail {
                first_unsigned_line: first.line,
            },
        ));
    }
    let closed = v.last_kind == Some(EntryKind::Stop);
    if !closed && !allow_open {
        return Err(at(last, Fault::NotClosed));
    }
    Ok(VerifyReport {
        entries: v.entries,
        fingerprint: v.key.as_ref().map(fingerprint_of).unwrap_or_default(),
        key_pinned,
        closed,
        anchor_seq: anchor.map(Anchor::seq),
    })
}

/// A line's position: index into `paths`, 1-based line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    file: usize,
    line: u64,
}

/// Names the first fault precisely by looking further (see module docs).
fn refine(v: &Verifier<'_>, pos: Pos, current: &[u8], fault: Fault, lines: &mut Lines<'_>) -> (Pos, Fault) {
    match fault {
        Fault::SeqGap { expected, found } => {
            #[derive(serde::Deserialize)]
            struct SeqOnly {
                seq: u64,
            }
            while let Ok(Some(_)) = lines.next() {
                if let Ok(SeqOnly { seq }) = serde_json::from_slice(&lines.buf)
                    && seq == expected
                {
                    return (pos, Fault::Reorder { expected, found });
                }
            }
            (pos, Fault::SeqGap { expected, found })
        }
        Fault::BrokenChain => match v.prev_pos {
            Some(prev_pos) if !v.prev_signed && vouched(v, pos, current, lines) => (prev_pos, Fault::Altered),
            _ => (pos, Fault::BrokenChain),
        },
        other => (pos, other),
    }
}

/// Whether `current` (whose `prev` did not match) is itself authentic: taking
/// its `prev` as given, do the lines from it to the next signature verify?
fn vouched(v: &Verifier<'_>, pos: Pos, current: &[u8], lines: &mut Lines<'_>) -> bool {
    let mut sub = v.clone();
    let claimed = Entry::parse(current).ok().and_then(|e| parse_hex32(&e.prev));
    let Some(claimed) = claimed else {
        return false;
    };
    sub.prev = claimed;
    match sub.check(pos, current) {
        Ok(true) => return true,
        Ok(false) => {}
        Err(_) => return false,
    }
    while let Ok(Some(line)) = lines.next() {
        if !line.complete || line.too_long {
            return false;
        }
        match sub.check(line.pos, &lines.buf) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Chain state while walking the series.
#[derive(Clone)]
struct Verifier<'k> {
    pinned: Option<&'k VerifyingKey>,
    /// The series' key (from the first `start`, checked against `pinned`).
    key: Option<VerifyingKey>,
    expected_seq: u64,
    prev: [u8; 32],
    entries: u64,
    last_kind: Option<EntryKind>,
    prev_pos: Option<Pos>,
    prev_signed: bool,
    /// First line not yet covered by a signature.
    uncovered: Option<Pos>,
    scratch: Vec<u8>,
}

impl<'k> Verifier<'k> {
    fn new(pinned: Option<&'k VerifyingKey>) -> Self {
        Verifier {
            pinned,
            key: None,
            expected_seq: 0,
            prev: GENESIS,
            entries: 0,
            last_kind: None,
            prev_pos: None,
            prev_signed: false,
            uncovered: None,
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Checks one complete line; on success advances and returns whether it
    /// carried a (valid) signature.
    fn check(&mut self, pos: Pos, line: &[u8]) -> Result<bool, Fault> {
        if line.is_empty() {
            return Err(Fault::Malformed("empty line".to_owned()));
        }
        let mut entry = Entry::parse(line)?;
        structure(&entry)?;
        let first = self.entries == 0;
        if first && entry.kind != EntryKind::Start {
            return Err(Fault::NotStarted);
        }
        if self.last_kind == Some(EntryKind::Stop) && entry.kind != EntryKind::Start {
            return Err(Fault::AfterStop);
        }
        let key = self.key_for(&entry, first)?;
        if entry.seq != self.expected_seq {
            return Err(if entry.seq > self.expected_seq {
                Fault::SeqGap {
                    expected: self.expected_seq,
                    found: entry.seq,
                }
            } else {
                Fault::Duplicate { seq: entry.seq }
            });
        }
        if parse_hex32(&entry.prev) != Some(self.prev) {
            return Err(Fault::BrokenChain);
        }
        let signed = match entry.sig.take() {
            Some(sig) => {
                let sig = decode_sig(&sig).ok_or(Fault::BadSignature)?;
                // The chain head: this line with `sig: null`.
                self.scratch.clear();
                entry.write_json(&mut self.scratch).map_err(Fault::Malformed)?;
                if !verify_head(&key, &sha256(&self.scratch), &sig) {
                    return Err(Fault::BadSignature);
                }
                true
            }
            None if matches!(entry.kind, EntryKind::Start | EntryKind::Stop) => {
                return Err(Fault::MissingSignature);
            }
            None => false,
        };
        if let Some(count) = entry.count
            && count != entry.seq + 1
        {
            return Err(Fault::BadCount {
                expected: entry.seq + 1,
                found: count,
            });
        }
        self.key = Some(key);
        self.expected_seq = entry.seq + 1;
        self.prev = sha256(line);
        self.entries += 1;
        self.last_kind = Some(entry.kind);
        self.prev_pos = Some(pos);
        self.prev_signed = signed;
        if signed {
            self.uncovered = None;
        } else if self.uncovered.is_none() {
            self.uncovered = Some(pos);
        }
        Ok(signed)
    }

    /// The key this line must be signed with; checks `start` entries' keys.
    fn key_for(&self, entry: &Entry<'_>, first: bool) -> Result<VerifyingKey, Fault> {
        let recorded = match entry.kind {
            EntryKind::Start => {
                let key = entry
                    .pubkey
                    .as_deref()
                    .and_then(decode_pubkey)
                    .ok_or_else(|| Fault::Malformed("pubkey is not an ed25519 public key".to_owned()))?;
                if entry.fingerprint.as_deref() != Some(fingerprint_of(&key).as_str()) {
                    return Err(Fault::Malformed("fingerprint does not match pubkey".to_owned()));
                }
                Some(key)
            }
            _ => None,
        };
        let expected = if first { self.pinned.copied() } else { self.key };
        match (recorded, expected) {
            (Some(found), Some(expected)) if found != expected => Err(Fault::WrongKey {
                expected: fingerprint_of(&expected),
                found: fingerprint_of(&found),
            }),
            (Some(found), _) => Ok(found),
            (None, Some(expected)) => Ok(expected),
            // Only reachable for a first line that is not a start entry,
            // which `check` rejects before asking.
            (None, None) => Err(Fault::NotStarted),
        }
    }
}

/// Field rules that serde cannot express: per-kind fields, formats.
fn structure(entry: &Entry<'_>) -> Result<(), Fault> {
    let bad = |why: &str| Err(Fault::Malformed(why.to_owned()));
    if parse_hex32(&entry.prev).is_none() {
        return bad("prev is not 64 lower-case hex digits");
    }
    if !entry.ts.ends_with('Z') || entry.ts.parse::<jiff::Timestamp>().is_err() {
        return bad("ts is not an RFC 3339 UTC timestamp");
    }
    if entry.sig.as_deref().is_some_and(|s| decode_sig(s).is_none()) {
        return bad("sig is not base64 of 64 bytes");
    }
    let start_fields = entry.pubkey.is_some() || entry.fingerprint.is_some() || entry.version.is_some();
    match entry.kind {
        EntryKind::Egress | EntryKind::Dns => {
            if entry.decision.is_none() {
                return bad("decision is null");
            }
            if start_fields || entry.count.is_some() {
                return bad("start/stop fields in a finding");
            }
        }
        EntryKind::Start => {
            if entry.decision.is_some() || entry.count.is_some() {
                return bad("start entry with decision or count");
            }
            if entry.pubkey.is_none() || entry.fingerprint.is_none() || entry.version.is_none() {
                return bad("start entry without pubkey, fingerprint or version");
            }
        }
        EntryKind::Stop => {
            if entry.decision.is_some() || start_fields {
                return bad("stop entry with decision or start fields");
            }
            if entry.count.is_none() {
                return bad("stop entry without count");
            }
        }
    }
    Ok(())
}

/// One line as read.
struct Line {
    pos: Pos,
    /// Ended with a newline.
    complete: bool,
    /// Longer than [`MAX_LINE`] (only its start is kept).
    too_long: bool,
}

/// Streams the lines of all files in order; the current line's bytes
/// (without newline) are in `buf`.
struct Lines<'p> {
    paths: &'p [PathBuf],
    file: usize,
    reader: Option<BufReader<File>>,
    line: u64,
    buf: Vec<u8>,
}

impl<'p> Lines<'p> {
    fn new(paths: &'p [PathBuf]) -> Self {
        Lines {
            paths,
            file: 0,
            reader: None,
            line: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    fn next(&mut self) -> Result<Option<Line>, (Pos, Fault)> {
        loop {
            let here = Pos {
                file: self.file,
                line: self.line,
            };
            let reader = match &mut self.reader {
                Some(r) => r,
                None => {
                    let Some(path) = self.paths.get(self.file) else {
                        return Ok(None);
                    };
                    let file = File::open(path).map_err(|e| (here, Fault::Io(e.to_string())))?;
                    self.line = 0;
                    self.reader.insert(BufReader::with_capacity(256 * 1024, file))
                }
            };
            self.buf.clear();
            let (read, newline, too_long) = read_line(reader, &mut self.buf).map_err(|e| {
                (
                    Pos {
                        file: self.file,
                        line: self.line + 1,
                    },
                    Fault::Io(e.to_string()),
                )
            })?;
            if read == 0 {
                if self.line == 0 {
                    return Err((
                        Pos {
                            file: self.file,
                            line: 0,
                        },
                        Fault::Empty,
                    ));
                }
                self.reader = None;
                self.file += 1;
                self.line = 0;
                continue;
            }
            self.line += 1;
            return Ok(Some(Line {
                pos: Pos {
                    file: self.file,
                    line: self.line,
                },
                complete: newline,
                too_long,
            }));
        }
    }
}

/// Reads up to and including the next newline, keeping at most [`MAX_LINE`]
/// bytes (newline excluded). Returns (bytes consumed, saw newline, too long).
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<(usize, bool, bool)> {
    let mut read = 0;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((read, false, too_long));
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        if chunk.len() > room {
            too_long = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        read += used;
        if done.is_some() {
            return Ok((read, true, too_long));
        }
    }
}
