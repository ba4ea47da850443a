//! Config parsing: TOML text → the checked configuration the guard runs
//! with (`secureops::config::parse`, the code `config validate`, `proxy`
//! and `run` load files with).
//!
//! Beyond "no panic": an error names the file and, where it has a place,
//! a line and column inside the text; an accepted config yields the
//! components' settings.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match secureops::config::parse(text, FILE, PathBuf::from("/nonexistent")) {
        Ok(loaded) => {
            let _ = loaded.proxy_config();
            let _ = loaded.dns_config();
            let _ = loaded.audit_config(None);
            assert!(loaded.raw.proxy.max_connections >= 1);
        }
        Err(e) => {
            let shown = e.to_string();
            let rest = shown.strip_prefix(FILE).expect("the error names the file");
            let lines = text.split('\n').count();
            if let Some((line, col)) = place(rest) {
                assert!(line >= 1 && line <= lines, "line {line} of {lines}: {shown}");
                assert!(col >= 1, "{shown}");
            }
        }
    }
});

/// `:LINE:COL: ` at the start of the rest of the message, if there.
fn place(rest: &str) -> Option<(usize, usize)> {
    let mut parts = rest.strip_prefix(':')?.splitn(3, ':');
    let line = parts.next()?.parse().ok()?;
    let col = parts.next()?.parse().ok()?;
    Some((line, col))
}
