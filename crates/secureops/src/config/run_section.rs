//! `[run]`: what `secureops run` lets CMD see of the host beyond its
//! working folder and home.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// `[run]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Host Unix sockets CMD may connect to, bound in at the same path
    /// (every other pathname socket of the host is out of reach).
    pub unix_sockets: Vec<Spanned<String>>,
    /// More paths CMD must not see (`~` is the agent's home).
    pub hide: Vec<Spanned<String>>,
    /// Run CMD as this account (root callers; see `run --user`).
    pub user: Option<String>,
}

/// Sockets that hand out more than the network: whoever can talk to them
/// can start a process outside the run, or ask the host to connect.
const WAYS_AROUND: &[(&str, &str)] = &[
    (
        "docker.sock",
        "the Docker daemon starts containers with their own network",
    ),
    (
        "podman.sock",
        "the Podman service starts containers with their own network",
    ),
    ("containerd.sock", "containerd starts containers with their own network"),
    (
        "/bus",
        "the session bus starts services outside the run (systemd-run --user)",
    ),
    (
        "system_bus_socket",
        "the system bus reaches host services outside the run",
    ),
    ("ssh-agent", "an ssh agent signs for connections made outside the run"),
];

/// `~/x` → `HOME/x`; other paths unchanged.
pub fn expand(path: &str, home: &std::path::Path) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if path == "~" => home.to_path_buf(),
        None => PathBuf::from(path),
    }
}

impl RunSection {
    /// Warnings for sockets that are ways around the guard, and the
    /// relative paths that cannot mean anything stable.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.unix_sockets {
            let s = s.get_ref();
            if let Some((_, why)) = WAYS_AROUND.iter().find(|(name, _)| s.contains(name)) {
                out.push(format!("[run] unix_sockets {s:?} is a way around the guard: {why}"));
            }
        }
        out
    }

    /// Problems that stop the config: paths must be absolute (or `~/…`).
    pub fn check(&self) -> Result<(), (std::ops::Range<usize>, String)> {
        for (what, list) in [("unix_sockets", &self.unix_sockets), ("hide", &self.hide)] {
            for p in list {
                let s = p.get_ref();
                if !(s.starts_with('/') || s.starts_with("~/") || s == "~") {
                    return Err((
                        p.span(),
                        format!("[run] {what}: {s:?} must be an absolute path or start with ~/"),
                    ));
                }
            }
        }
        Ok(())
    }
}
