//! One line of the log, and its canonical JSON form.
//!
//! The struct's fields are declared in byte order of their names, so serde_json
//! writes them sorted and compact: with integers and strings only, that is the
//! RFC 8785 (JCS) form. Optional extras are omitted when absent; the mandatory
//! nullable fields are always written (as `null` when unknown).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::finding::{Verdict, Via};
use crate::verify::Fault;

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
    /// This checks the form of one line only; [`crate::verify`] checks the
    /// chain and the signatures.
    ///
    /// # Errors
    /// [`Fault::Malformed`] saying what is wrong.
    pub fn parse(line: &'a [u8]) -> Result<Entry<'a>, Fault> {
        let entry: Entry<'a> = serde_json::from_slice(line).map_err(|e| Fault::Malformed(e.to_string()))?;
        let mut again = Vec::with_capacity(line.len());
        entry.write_json(&mut again).map_err(Fault::Malformed)?;
        if again != line {
            return Err(Fault::Malformed(noncanonical_reason(line)));
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

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"decision":"deny","detail":"a\"b\\c\u0007é","exe":null,"host":"x.example","kind":"egress","pid":7,"port":443,"prev":"0000000000000000000000000000000000000000000000000000000000000000","reason":"not allowed","seq":3,"sig":null,"status":403,"ts":"2026-11-25T12:00:00.000001Z","via":"host-header"}"#;

    #[test]
    fn canonical_line_round_trips_through_value() {
        let entry = Entry::parse(LINE.as_bytes()).unwrap();
        assert_eq!(entry.via, Some(Via::HostHeader));
        assert_eq!(entry.detail.as_deref(), Some("a\"b\\c\u{7}é"));
        let mut out = Vec::new();
        entry.write_json(&mut out).unwrap();
        assert_eq!(out, LINE.as_bytes());
        // A generic JSON parser re-serialises it to the same bytes.
        let value: serde_json::Value = serde_json::from_str(LINE).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), LINE);
    }

    #[test]
    fn non_canonical_forms_are_refused() {
        let cases = [
            LINE.replace(r#""kind":"egress","#, r#""kind": "egress","#),
            LINE.replace(r#"\u0007"#, r#"\u0007"#.to_uppercase().as_str()),
            LINE.replace("é", r#"\u00e9"#),
            LINE.replace(r#""exe":null,"#, ""),
            LINE.replace(r#""status":403,"#, r#""status":null,"#),
            LINE.replace(r#""pid":7,"#, r#""pid":7.0,"#),
            LINE.replace(r#""decision":"deny","detail""#, r#""detail""#)
                .replace(r#""exe":null,"#, r#""exe":null,"decision":"deny","#),
            LINE.replace(r#""via":"host-header""#, r#""via":"host-header","extra":1"#),
        ];
        for case in cases {
            assert_ne!(case, LINE);
            let err = Entry::parse(case.as_bytes()).unwrap_err();
            assert!(matches!(err, Fault::Malformed(_)), "{case}");
        }
        let missing = Entry::parse(LINE.replace(r#""exe":null,"#, "").as_bytes()).unwrap_err();
        assert_eq!(missing, Fault::Malformed("missing field `exe`".to_owned()));
    }
}
