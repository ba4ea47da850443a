//! Chain arithmetic: line hashes, chain heads, what is signed.
//!
//! `prev` of line i+1 is sha256 of line i's exact bytes (without newline).
//! The chain head of line i is sha256 of line i serialised with `sig: null`;
//! for an unsigned line that is the line itself. A signature on line i signs
//! `DOMAIN || head_i`, and since `head_i` commits to `prev`, it covers 0..=i.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// Domain separation prefix of every signed message, so that an audit
/// signature can never be replayed as a signature of something else.
pub const DOMAIN: &[u8] = b"secureops-audit-v1\0";

/// `prev` of the first line of a log series.
pub const GENESIS: [u8; 32] = [0; 32];

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Replaces `out` with the lower-hex form of `hash` (no allocation once `out`
/// has grown to 64 bytes).
pub(crate) fn hex_into(hash: &[u8; 32], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    for b in hash {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Parses 64 lower-hex digits (upper case is not canonical and refused).
pub(crate) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The exact message signed for a chain head.
fn message(head: &[u8; 32]) -> [u8; DOMAIN.len() + 32] {
    let mut msg = [0u8; DOMAIN.len() + 32];
    msg[..DOMAIN.len()].copy_from_slice(DOMAIN);
    msg[DOMAIN.len()..].copy_from_slice(head);
    msg
}

/// The signing half of the log's key. Ed25519 signatures are deterministic
/// (RFC 8032), so both forms give the same bytes; AWS-LC's is 2.3× faster.
pub(crate) enum HeadSigner {
    /// AWS-LC's Ed25519.
    Fast(aws_lc_rs::signature::Ed25519KeyPair),
    /// ed25519-dalek, should AWS-LC ever refuse the key.
    Dalek(SigningKey),
}

impl HeadSigner {
    pub(crate) fn new(key: &SigningKey) -> Self {
        let public = key.verifying_key().to_bytes();
        match aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(&key.to_bytes(), &public) {
            Ok(pair) => HeadSigner::Fast(pair),
            Err(_) => HeadSigner::Dalek(key.clone()),
        }
    }
}

/// Signs a chain head; appends base64 of the signature to a cleared `out`.
pub(crate) fn sign_head(key: &HeadSigner, head: &[u8; 32], out: &mut String) {
    let msg = message(head);
    out.clear();
    match key {
        HeadSigner::Fast(pair) => STANDARD.encode_string(pair.sign(&msg), out),
        HeadSigner::Dalek(key) => STANDARD.encode_string(key.sign(&msg).to_bytes(), out),
    }
}

/// Checks a base64 signature over a chain head (strict verification:
/// rejects small-order keys and non-canonical signatures).
pub(crate) fn verify_head(key: &VerifyingKey, head: &[u8; 32], sig: &Signature) -> bool {
    key.verify_strict(&message(head), sig).is_ok()
}

/// Decodes a `sig` field (standard base64 of 64 bytes).
pub(crate) fn decode_sig(b64: &str) -> Option<Signature> {
    let mut buf = [0u8; 96];
    let n = STANDARD.decode_slice(b64, &mut buf).ok()?;
    let bytes: [u8; 64] = buf.get(..n)?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

/// Base64 (standard, padded) of the public key, as in the `start` entry.
pub(crate) fn pubkey_b64(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Decodes a `pubkey` field.
pub(crate) fn decode_pubkey(b64: &str) -> Option<VerifyingKey> {
    let mut buf = [0u8; 48];
    let n = STANDARD.decode_slice(b64, &mut buf).ok()?;
    let bytes: [u8; 32] = buf.get(..n)?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// `SHA256:` + base64 without padding of sha256(public key bytes), as ssh
/// prints fingerprints.
pub fn fingerprint_of(key: &VerifyingKey) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(sha256(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = sha256(b"abc");
        let mut s = String::new();
        hex_into(&h, &mut s);
        assert_eq!(s, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(parse_hex32(&s), Some(h));
        assert_eq!(parse_hex32(&s.to_uppercase()), None);
    }

    #[test]
    fn sign_and_verify_head() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let head = sha256(b"line");
        let mut b64 = String::new();
        sign_head(&HeadSigner::new(&key), &head, &mut b64);
        let sig = decode_sig(&b64).unwrap();
        assert!(verify_head(&key.verifying_key(), &head, &sig));
        assert!(!verify_head(&key.verifying_key(), &sha256(b"other"), &sig));
        assert_eq!(
            decode_pubkey(&pubkey_b64(&key.verifying_key())),
            Some(key.verifying_key())
        );
    }

    #[test]
    fn aws_lc_and_dalek_sign_the_same_bytes() {
        for seed in [[7u8; 32], [0u8; 32], [0xff; 32], *b"secureops-audit-key-0123456789ab"] {
            let key = SigningKey::from_bytes(&seed);
            let fast = HeadSigner::new(&key);
            assert!(matches!(fast, HeadSigner::Fast(_)), "AWS-LC refused a valid key");
            let dalek = HeadSigner::Dalek(key.clone());
            for line in [&b"a"[..], b"line", b"{\"seq\":1}"] {
                let head = sha256(line);
                let (mut a, mut b) = (String::new(), String::new());
                sign_head(&fast, &head, &mut a);
                sign_head(&dalek, &head, &mut b);
                assert_eq!(a, b);
                assert!(verify_head(&key.verifying_key(), &head, &decode_sig(&a).unwrap()));
            }
        }
    }
}
