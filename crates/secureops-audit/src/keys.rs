//! The ed25519 signing key: generation, loading, permission checks.
//!
//! Private keys are PKCS#8 PEM (`BEGIN PRIVATE KEY`, as `openssl genpkey
//! -algorithm ed25519` writes), public keys SPKI PEM (`BEGIN PUBLIC KEY`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::EncodePublicKey as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::chain::{decode_pubkey, fingerprint_of};
use crate::error::AuditError;

/// Largest key file we read; a PEM key is a few hundred bytes.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// `x.key` -> `x.key.pub`, like ssh-keygen.
pub(crate) fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Generates a new key: writes the private key to `out` (PKCS#8 PEM, mode
/// 0600) and the public key to `out` + `.pub` (SPKI PEM). Never overwrites
/// either file. Returns the key's fingerprint (`SHA256:…`).
///
/// # Errors
/// [`AuditError::AlreadyExists`] if either file exists; I/O and randomness
/// errors otherwise (a half-written key file is removed).
pub fn generate_key(out: &Path) -> Result<String, AuditError> {
    let pub_out = pub_path(out);
    if pub_out.exists() {
        return Err(AuditError::AlreadyExists { path: pub_out });
    }
    let key = new_key()?;
    write_private(out, &key)?;
    if let Err(e) = write_public(&pub_out, &key.verifying_key()) {
        // Keep the pair consistent: no private key without its .pub.
        let _ = fs::remove_file(out);
        return Err(e);
    }
    Ok(fingerprint_of(&key.verifying_key()))
}

/// Loads a public key for verification: an SPKI PEM (`.pub`), a PKCS#8 PEM
/// private key (its public half is used), or the base64 `pubkey` value of a
/// `start` entry.
///
/// # Errors
/// I/O errors, or [`AuditError::Key`] if the content is none of the above.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, AuditError> {
    let text = read_small(path, &mut File::open(path).map_err(|e| AuditError::io(path, e))?)?;
    let bad = |detail: String| AuditError::Key {
        path: path.to_owned(),
        detail,
    };
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| bad(e.to_string()))
    } else if text.contains("-----BEGIN PRIVATE KEY-----") {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(|k| k.verifying_key())
            .map_err(|e| bad(e.to_string()))
    } else {
        decode_pubkey(text.trim())
            .ok_or_else(|| bad("expected a PEM public or private key, or a base64 public key".to_owned()))
    }
}

/// Loads the signing key, creating it (and its `.pub`) when the file does not
/// exist. Refuses a key file that group or others may read or write.
pub(crate) fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, AuditError> {
    match File::open(path) {
        Ok(mut file) => load_private(path, &mut file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = new_key()?;
            match write_private(path, &key) {
                Ok(()) => {}
                // Someone created it meanwhile: use theirs.
                Err(AuditError::AlreadyExists { .. }) => {
                    let mut file = File::open(path).map_err(|e| AuditError::io(path, e))?;
                    return load_private(path, &mut file);
                }
                Err(e) => return Err(e),
            }
            let pub_out = pub_path(path);
            if !pub_out.exists() {
                // The .pub is a convenience for `audit verify --pubkey`.
                if let Err(e) = write_public(&pub_out, &key.verifying_key()) {
                    tracing::warn!(path = %pub_out.display(), error = %e, "could not write public key file");
                }
            }
            tracing::info!(path = %path.display(), fingerprint = %fingerprint_of(&key.verifying_key()), "created audit signing key");
            Ok(key)
        }
        Err(e) => Err(AuditError::io(path, e)),
    }
}

fn load_private(path: &Path, file: &mut File) -> Result<SigningKey, AuditError> {
    // fstat the opened file, so the checked file is the one we read.
    let meta = file.metadata().map_err(|e| AuditError::io(path, e))?;
    if !meta.is_file() {
        return Err(AuditError::Key {
            path: path.to_owned(),
            detail: "not a regular file".to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(AuditError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = read_small(path, file)?;
    SigningKey::from_pkcs8_pem(text.trim()).map_err(|e| AuditError::Key {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn read_small(path: &Path, file: &mut File) -> Result<Zeroizing<String>, AuditError> {
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|e| AuditError::io(path, e))?;
    Ok(text)
}

fn new_key() -> Result<SigningKey, AuditError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(AuditError::Random)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Creates `path` exclusively with `mode` and writes `contents`, synced.
fn create_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), AuditError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                AuditError::AlreadyExists { path: path.to_owned() }
            } else {
                AuditError::io(path, e)
            }
        })?;
    if let Err(e) = file.write_all(contents).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(path);
        return Err(AuditError::io(path, e));
    }
    Ok(())
}

fn write_private(path: &Path, key: &SigningKey) -> Result<(), AuditError> {
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| AuditError::Key {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    create_new(path, 0o600, pem.as_bytes())
}

fn write_public(path: &Path, key: &VerifyingKey) -> Result<(), AuditError> {
    let pem = key.to_public_key_pem(LineEnding::LF).map_err(|e| AuditError::Key {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    create_new(path, 0o644, pem.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("a.key");
        let fp = generate_key(&key).unwrap();
        assert!(fp.starts_with("SHA256:"));
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        let public = load_public_key(&pub_path(&key)).unwrap();
        assert_eq!(fingerprint_of(&public), fp);
        assert_eq!(load_public_key(&key).unwrap(), public);
        let private = load_or_create_signing_key(&key).unwrap();
        assert_eq!(private.verifying_key(), public);
        assert!(matches!(generate_key(&key), Err(AuditError::AlreadyExists { .. })));
    }

    #[test]
    fn refuses_open_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("b.key");
        generate_key(&key).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_or_create_signing_key(&key).unwrap_err();
        assert!(matches!(err, AuditError::KeyPermissions { mode: 0o640, .. }));
        let msg = err.to_string();
        assert!(msg.contains("permissions 0640 for"), "{msg}");
        assert!(msg.contains("are too open; run: chmod 600"), "{msg}");
    }

    #[test]
    fn creates_missing_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("c.key");
        let k = load_or_create_signing_key(&key).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(load_public_key(&pub_path(&key)).unwrap(), k.verifying_key());
    }

    #[test]
    fn garbage_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("d.key");
        create_new(&key, 0o600, b"hello").unwrap();
        assert!(matches!(load_or_create_signing_key(&key), Err(AuditError::Key { .. })));
        assert!(matches!(load_public_key(&key), Err(AuditError::Key { .. })));
    }
}
