//! The audit verifier on arbitrary bytes as a log file (and each line as
//! an entry). `secureops audit verify` runs on files an agent may have
//! written to, so it must end with a verdict, never a panic.
//!
//! Beyond "no panic": a log that verifies has at most as many entries as
//! lines, ends in a newline, and is closed unless checked as open.
//! The scratch file is removed by scripts/fuzz.sh.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use secureops_audit::{Entry, verify};

/// One scratch file per process, on tmpfs where there is one.
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = ["/dev/shm"]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    dir.join(format!("secureops-fuzz-audit-{}.jsonl", std::process::id()))
});

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        let _ = Entry::parse(line);
    }
    let path = &*FILE;
    std::fs::write(path, data).expect("scratch file");
    let paths = [path.clone()];
    for open in [true, false] {
        let Ok(report) = verify(&paths, None, open) else {
            continue;
        };
        let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        assert!(report.entries >= 1 && report.entries <= lines);
        assert_eq!(data.last(), Some(&b'\n'));
        assert!(open || report.closed);
    }
});
