//! SecureOps audit log: signed, hash-chained JSON Lines, one entry per
//! decision.
//!
//! # Format
//!
//! Every line is one JSON object in canonical form (RFC 8785 for our data:
//! keys sorted, compact, integers and strings only), ending in `\n`:
//!
//! * always: `seq` (0, 1, 2, … gap-free over the whole series), `ts` (RFC 3339
//!   UTC, microseconds, `Z`), `kind` (`egress`|`dns`|`start`|`stop`),
//!   `decision` (`allow`|`deny`|`escalate`, `null` for start/stop), `reason`,
//!   `host`, `port`, `via`, `pid`, `exe` (`null` when unknown), `prev`
//!   (lower-hex SHA-256 of the previous line's bytes without its newline; 64
//!   `0`s for the first line) and `sig` (base64 ed25519 signature or `null`);
//! * when present: `status`, `qtype`, `detail`;
//! * `start`: `pubkey` (base64 of the 32-byte key), `fingerprint`
//!   (`SHA256:` + unpadded base64 of sha256(pubkey), as ssh prints it),
//!   `version`; `pid`/`exe` are the writer's own;
//! * `stop`: `count` (entries in the series including start and stop,
//!   i.e. its `seq + 1`).
//!
//! The chain head of a line is sha256 of that line serialised with
//! `"sig":null` (for an unsigned line: the line itself). `sig` signs
//! `b"secureops-audit-v1\0" || head`. Since each head commits to `prev`, a
//! signature covers its own line and every line before it. With
//! [`SignPolicy::Batch`] only the last line of each group commit carries a
//! signature; `start` and `stop` lines always do.
//!
//! # Restarts, torn tails, rotation
//!
//! * Opening an existing log continues its chain with a new `start` entry
//!   (`reason: "restart"`; its `detail` notes a missing stop or a repaired
//!   tail). A log started with another key is refused.
//! * A torn last line (the previous run died mid-write, so it was never
//!   acknowledged) is moved to `<path>.torn` and cut off, so the log stays
//!   verifiable; `verify` on the unrepaired file reports
//!   [`Fault::TornLastLine`].
//! * With `rotate_bytes > 0`, when the next group would push the file past
//!   that size, the file gets a signed `stop` (`reason: "rotate"`), is renamed
//!   to `<stem>.<n>.<ext>` (n = 1, 2, …), and a new file at `path` starts with
//!   a `start` entry that continues `seq` and `prev`. Verify a series by
//!   passing the files oldest first, the current `path` last. The series must
//!   start at `seq` 0: a rotated file on its own does not verify.
//!
//! `reason` of the log's own entries: `start` (new log), `restart`
//! (continuing an existing one), `rotate` (both the `stop` ending a rotated
//! file and the `start` of the next), `close` (the `stop` of
//! [`AuditLog::close`]).
//!
//! One writer per log: the writer holds an exclusive `flock` on the file
//! from before it looks at the tail until [`AuditLog::close`] (or the last
//! handle is dropped); a second writer gets [`AuditError::InUse`] instead
//! of interleaving a second chain into the file.
//!
//! # Anchor
//!
//! The chain alone cannot tell a log cut back to an earlier `stop` (the
//! first run's lines of a log that had two) from a complete one, and a
//! `verify` that trusts the key in the first entry accepts a log written
//! anew under a new key. With [`AuditConfig::anchor_dir`] the writer keeps
//! an *anchor* there: a small JSON file per log (see [`anchor_path`] and
//! [`Anchor`]) holding the log's path, the `seq` and line hash of its last
//! durable entry and the log's public key, signed by that key. It is
//! updated on a thread of its own after each background sync (fsync=batch:
//! once the lines it names are synced, so it never claims more than the
//! disk holds; fsync=always: after the writer's sync), at most every 5 ms,
//! the newest group winning; the start entry's and the final `stop`'s
//! anchors are written (and synced) before [`AuditLog::open`] and
//! [`AuditLog::close`] return. Decisions never wait for it. A failed update
//! is logged once per episode and fails nothing: the log is the record, the
//! anchor only a check on it (a later cut of the entries it missed would
//! then go unnoticed). Over rotations it follows the live `path`, with
//! `seq` counting over the series.
//!
//! [`verify_with_anchor`] then pins the anchor's key (unless a key is
//! given, which must then be the anchor's) and requires the series to reach
//! the anchor's `seq` with the very line it records: a log cut back fails
//! with [`Fault::EndsBeforeAnchor`], one rewritten under a new key with
//! [`Fault::WrongKey`] on line 1, one re-signed with the same key with
//! [`Fault::AnchorMismatch`]; an anchor whose signature fails does not load.
//! [`AuditLog::open`] refuses to continue a log that does not reach or
//! match its anchor ([`AuditError::Anchor`]): moving the anchor on would
//! bury the cut.
//!
//! What it does not stop: whoever holds the signing key *and* can write the
//! anchor folder can still rewrite log and anchor consistently; whoever can
//! write the anchor folder can delete the anchor (then there is "no
//! anchor", as before). Whoever can write the log, key or not, can still
//! cut off entries newer than the last anchor update: after a crash of the
//! guard at most about 5 ms plus one sync's worth, none once the log is
//! closed (a cut while the guard runs breaks the chain at its next line).
//! So the anchor only helps where the attacker cannot write it: `secureops
//! run` keeps it in the guard's state folder, which it hides from the
//! command.
//!
//! # Writing
//!
//! A writer thread owns the file (`O_APPEND`) and commits whatever is queued
//! as one group: one timestamp, one `write`, with sign=batch one signature.
//! A caller that holds many decisions at once (the DNS sinkhole's read
//! batch) may instead commit them as one group on its own thread while the
//! writer thread is idle ([`AuditLog::try_append_now`], fsync=batch only,
//! never a rotation): the same group commit under the same lock, without
//! the two thread wake-ups of a hand-off, which cost more than the group
//! itself at low rates. A panic while committing stops the log (every
//! later append fails).
//!
//! With fsync=batch (the default) a request is answered once its line is
//! written to the file: from then on a crash or kill of the guard cannot
//! lose it, and `audit verify` sees it. A second thread syncs the data
//! (`fdatasync`) in the background, at most every 5 ms, one sync covering
//! every group written meanwhile, so only a power loss or kernel crash can
//! lose lines, and only those written since the last finished sync (about
//! 5 ms plus one sync time). Decisions therefore never wait for the disk.
//! With fsync=always each line is synced before its request is answered and
//! before the next line is written.
//!
//! # Failure
//!
//! A failed write fails every request of its group (the decisions become
//! refusals); the file is truncated back to the last good line and the
//! in-memory chain is reset to it; the next group retries. A failed
//! background sync (fsync=batch) stops the log for the rest of the process:
//! a group not yet handed to the syncer fails and is truncated off, lines
//! answered before stay, and every later append fails, since a later sync
//! that succeeds would not prove the earlier lines reached the disk. With
//! fsync=batch the `stop` entry is synced before `close` returns and is
//! truncated off if that sync fails, so a close can be retried. One error is logged
//! per failure episode, not per entry.

#![forbid(unsafe_code)]
// Tests may unwrap; library code may not (checked by clippy without cfg(test)).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod anchor;
mod chain;
mod config;
mod encode;
mod entry;
mod error;
mod finding;
mod keys;
mod log;
mod pipe;
mod resume;
pub mod stats;
mod storage;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use anchor::{ANCHOR_DOMAIN, Anchor, AnchorError, anchor_path};
pub use chain::{DOMAIN, fingerprint_of};
pub use config::{AuditConfig, FsyncPolicy, SignPolicy};
pub use entry::{Entry, EntryKind, MAX_LINE};
pub use error::AuditError;
pub use finding::{AuditFinding, Kind, Verdict, Via};
pub use keys::{generate_key, load_public_key};
pub use log::{Appended, AuditLog, AuditObserver};
pub use resume::torn_path;
pub use stats::AuditStats;
pub use storage::rotated_files;
pub use verify::{Fault, VerifyError, VerifyReport, verify, verify_with_anchor};

/// Re-exported so callers can name [`load_public_key`]'s result.
pub use ed25519_dalek::VerifyingKey;

/// Entry encoding for `benches/encode.rs`; not a stable API.
#[doc(hidden)]
pub mod bench {
    use ed25519_dalek::SigningKey;

    use crate::AuditFinding;
    use crate::encode::{Body, Encoder};
    use crate::resume::ChainHead;

    /// One encoder and chain, as the writer thread holds them.
    pub struct Lines {
        enc: Encoder,
        head: ChainHead,
        /// The encoded lines (cleared by the caller as it likes).
        pub out: Vec<u8>,
    }

    impl Lines {
        /// A chain signed with a fixed key.
        pub fn new() -> Self {
            let mut enc = Encoder::new(SigningKey::from_bytes(&[7; 32]), "bench".to_owned());
            enc.stamp();
            Lines {
                enc,
                head: ChainHead::GENESIS,
                out: Vec::with_capacity(64 * 1024),
            }
        }

        /// Encodes one entry (canonical JSON, chain hash), signed or not.
        pub fn push(&mut self, finding: &AuditFinding, sign: bool) -> u64 {
            self.enc
                .push(&mut self.head, &mut self.out, Body::Finding(finding), sign)
                .unwrap_or(0)
        }
    }

    impl Default for Lines {
        fn default() -> Self {
            Self::new()
        }
    }
}
