//! Descriptor hygiene: CMD starts with what the user's shell passed to
//! `secureops run` and nothing of the guard's. Every descriptor the
//! namespace's init opens itself is close-on-exec; this checks it, without
//! touching descriptors it does not own, by reading `/proc/self/fdinfo`.

use std::collections::BTreeSet;

use anyhow::bail;

/// `O_CLOEXEC` in the octal `flags:` line of `/proc/self/fdinfo/N`.
const O_CLOEXEC: u32 = 0o2_000_000;

/// The descriptors open now.
pub fn open_now() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Fails when a descriptor that was not open at `entry` would survive an
/// exec: it would leak one of ours into CMD.
pub fn check_no_leak(entry: &BTreeSet<u32>) -> anyhow::Result<()> {
    for fd in open_now() {
        if entry.contains(&fd) {
            continue;
        }
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue; // the read_dir's own descriptor, closed since
        };
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
        if flags.is_some_and(|f| f & O_CLOEXEC == 0) {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            bail!("descriptor {fd} ({}) would leak into the command", target.display());
        }
    }
    Ok(())
}
