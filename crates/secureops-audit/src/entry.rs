//! One line of the log, and its canonical JSON form.
//!
//! The struct's fields are declared in byte order of their names, so serde_json
//! writes them sorted and compact: with integers and strings only, that is the
//! RFC 8785 (JCS) form. Optional extras are omitted when absent; the mandatory
//! nullable fields are always written (as `null` when unknown).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::finding::{Verdict, Via};

/// Longest line the writer produces and the verifier reads (1 MiB). A longer
/// finding is refused rather than written, so every written line verifies.
pub const MAX_LINE: usize = 1 << 20;

/// The kind of a log entry: a finding, or one of the log's own markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// An egress decision.
    Egress,
    /// A DNS decision.
    Dns,
    /// The log was opened (first line, after a restart, after rotation).
    Start,
    /// The log was closed cleanly (or rotated to the next file).
    Stop,
}

impl EntryKind {
    /// The word used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Egress => "egress",
            EntryKind::Dns => "dns",
            EntryKind::Start => "start",
            EntryKind::Stop => "stop",
        }
    }
}

impl From<crate::Kind> for EntryKind {
    fn from(kind: crate::Kind) -> Self {
        match kind {
            crate::Kind::Egress => EntryKind::Egress,
            crate::Kind::Dns => EntryKind::Dns,
        }
    }
}

/// One parsed (or to-be-written) log line. Field order is the canonical key
/// order; do not reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry<'a> {
    /// `stop` only: entries in the log including start and stop (= `seq + 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The decision; `null` for `start`/`stop`.
    pub decision: Option<Verdict>,
    /// Optional free-form detail.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'a, str>>,
    /// Executable of the attributed process.
    #[serde(borrow)]
    pub exe: Option<Cow<'a, str>>,
    /// `start` only: `SHA256:` + base64 (no padding) of sha256(public key).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Cow<'a, str>>,
    /// Destination host.
    #[serde(borrow)]
    pub host: Option<Cow<'a, str>>,
    /// Entry kind.
    pub kind: EntryKind,
    /// PID of the attributed process.
    pub pid: Option<u32>,
    /// Destination port.
    pub port: Option<u16>,
    /// Lower-hex SHA-256 of the previous line's bytes (64 `0`s for the first).
    #[serde(borrow)]
    pub prev: Cow<'a, str>,
    /// `start` only: base64 of the 32-byte ed25519 public key.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<Cow<'a, str>>,
    /// Optional DNS query type.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub qtype: Option<Cow<'a, str>>,
    /// Human reason.
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
    /// Position in the log series, 0-based, gap-free.
    pub seq: u64,
    /// Base64 ed25519 signature over this line's chain head, or `null`.
    #[serde(borrow)]
    pub sig: Option<Cow<'a, str>>,
    /// Optional HTTP status code the client got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// RFC 3339 UTC timestamp (`Z`).
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    /// `start` only: software version of the writer.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub version: Option<Cow<'a, str>>,
    /// How the host was learnt.
    pub via: Option<Via>,
}

impl<'a> Entry<'a> {
    /// Parses one line (without its newline) and checks that it is in
    /// canonical form, i.e. that re-serialising gives the same bytes.
    ///
    /// # Errors
    /// A short description of what is wrong.
    pub fn parse(line: &'a [u8]) -> Result<Entry<'a>, String> {
        let entry: Entry<'a> = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let mut again = Vec::with_capacity(line.len());
        entry.write_json(&mut again)?;
        if again != line {
            return Err(noncanonical_reason(line));
        }
        Ok(entry)
    }

    /// Appends the canonical JSON of this entry (no newline) to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<(), String> {
        // Writing into a Vec cannot fail, and our types always serialise.
        serde_json::to_writer(out, self).map_err(|e| e.to_string())
    }
}

/// Explains why a line that parsed is not canonical (error path only).
fn noncanonical_reason(line: &[u8]) -> String {
    const REQUIRED: [&str; 12] = [
        "decision", "exe", "host", "kind", "pid", "port", "prev", "reason", "seq", "sig", "ts", "via",
    ];
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(line) {
        if let Some(missing) = REQUIRED.iter().find(|k| !map.contains_key(**k)) {
            return format!("missing field `{missing}`");
        }
        if let Some((k, _)) = map.iter().find(|(k, v)| v.is_null() && !REQUIRED.contains(&k.as_str())) {
            return format!("optional field `{k}` is null (omit it instead)");
        }
    }
    "not in canonical form (RFC 8785: sorted keys, no whitespace, minimal escapes)".to_owned()
}
