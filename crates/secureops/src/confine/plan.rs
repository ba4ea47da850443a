//! What the command's mount namespace hides, keeps and locks: decided by
//! the supervisor (which knows the config, the audit files and the host's
//! sockets), applied by the namespace's init before CMD starts.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Folders CMD gets empty and private (mode 1777).
pub const PRIVATE: &[&str] = &["/tmp", "/var/tmp", "/run", "/dev/shm"];

/// The mount plan, sent over the control socket as the go-ahead.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// CMD's working folder: stays visible and writable, even under a
    /// private or hidden folder.
    pub cwd: PathBuf,
    /// Empty private tmpfs folders (existing ones among [`PRIVATE`]).
    pub private: Vec<PathBuf>,
    /// Folders replaced by an empty, read-only, unreadable tmpfs.
    pub hide_dirs: Vec<PathBuf>,
    /// Files (and sockets) covered by an empty unreadable file.
    pub hide_files: Vec<PathBuf>,
    /// Host pathname sockets covered the same way (not listed in
    /// `[run] unix_sockets`).
    pub sockets: Vec<PathBuf>,
    /// Host sockets CMD may use, bound in at the same path.
    pub allowed_sockets: Vec<PathBuf>,
    /// Files made read-only in place (the run's config files).
    pub read_only: Vec<PathBuf>,
    /// Mount trees made read-only in place, every mount in them.
    pub read_only_trees: Vec<PathBuf>,
    /// Folders bound onto themselves (recursively) so CMD cannot rename
    /// them: every folder above what is hidden or read-only, so moving a
    /// parent aside cannot undo a mask for the next run.
    pub pinned: Vec<PathBuf>,
}

/// Upper bound of a plan on the wire (a host with very many sockets).
const MAX: usize = 16 << 20;

impl Plan {
    /// Sends the plan (length-prefixed JSON): the go-ahead for CMD.
    pub fn send(&self, sock: &mut UnixStream) -> anyhow::Result<()> {
        let body = serde_json::to_vec(self)?;
        let len = u32::try_from(body.len()).context("mount plan too large")?;
        sock.write_all(&len.to_be_bytes())?;
        sock.write_all(&body)?;
        Ok(())
    }

    /// Receives a plan sent by [`Plan::send`].
    pub fn recv(sock: &mut UnixStream) -> anyhow::Result<Plan> {
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).context("supervisor went away")?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX {
            bail!("mount plan of {len} bytes is too large");
        }
        let mut body = vec![0u8; len];
        sock.read_exact(&mut body).context("supervisor went away")?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Whether `path` lies in a folder that is replaced wholesale, so it
    /// needs no mask of its own.
    pub fn covered(&self, path: &Path) -> bool {
        self.private.iter().chain(&self.hide_dirs).any(|d| path.starts_with(d))
    }
}

/// What the supervisor protects and what the config asks for.
#[derive(Debug, Default)]
pub struct Inputs {
    /// CMD's working folder.
    pub cwd: PathBuf,
    /// The audit log's path.
    pub audit_log: PathBuf,
    /// Its signing key.
    pub audit_key: PathBuf,
    /// Whether the log rotates (new files appear beside it).
    pub rotates: bool,
    /// Folders that belong to the guard alone (its state folder, the
    /// anchors): hidden whole.
    pub guard_dirs: Vec<PathBuf>,
    /// The escalation control socket, when there is one.
    pub escalation_socket: Option<PathBuf>,
    /// The run's config files.
    pub configs: Vec<PathBuf>,
    /// `[run] hide`, expanded.
    pub hide: Vec<PathBuf>,
    /// `[run] unix_sockets`, expanded.
    pub unix_sockets: Vec<PathBuf>,
    /// The host's bound pathname sockets ([`host_sockets`]).
    pub host_sockets: Vec<PathBuf>,
    /// The host's terminals but CMD's own ([`other_terminals`]).
    pub terminals: Vec<PathBuf>,
}

impl Plan {
    /// Decides the plan: `/tmp`, `/var/tmp`, `/run`, `/dev/shm` private;
    /// the guard's folders hidden; the audit log and key hidden (their
    /// whole folder when the log rotates or the folder is the guard's,
    /// which must then not hold CMD's working folder); config files
    /// read-only; every host socket masked but those allowed.
    pub fn build(raw: &Inputs) -> anyhow::Result<Plan> {
        // Decisions on the paths as the kernel resolves them: a symlinked
        // hide entry or state folder is hidden at its target.
        let i = &raw.canonical();
        let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        let mut plan = Plan {
            cwd: i.cwd.clone(),
            private: PRIVATE.iter().map(PathBuf::from).filter(|p| real_dir(p)).collect(),
            allowed_sockets: i.unix_sockets.clone(),
            read_only: i.configs.clone(),
            ..Plan::default()
        };
        let mut dirs: Vec<PathBuf> = i.guard_dirs.iter().filter(|d| real_dir(d)).cloned().collect();
        let log_dir = i.audit_log.parent().unwrap_or(Path::new("/")).to_path_buf();
        if i.rotates && !i.guard_dirs.iter().any(|d| log_dir.starts_with(d)) {
            dirs.push(log_dir.clone());
        }
        for d in &dirs {
            if i.cwd.starts_with(d) {
                bail!(
                    "the command's working folder {} lies in {}, which holds the guard's audit files; run it \
                     from another folder{}",
                    i.cwd.display(),
                    d.display(),
                    if i.rotates {
                        " (a rotating log needs a folder of its own)"
                    } else {
                        ""
                    }
                );
            }
        }
        plan.hide_dirs = dirs;
        let mut files = vec![
            i.audit_log.clone(),
            secureops_audit::torn_path(&i.audit_log),
            i.audit_key.clone(),
        ];
        files.extend(i.escalation_socket.clone());
        // Another terminal of the user could be read (stealing its input).
        files.extend(i.terminals.iter().cloned());
        for h in &i.hide {
            if real_dir(h) {
                plan.hide_dirs.push(h.clone());
            } else {
                files.push(h.clone());
            }
        }
        // A mask is needed where the host's tree still shows: outside the
        // replaced folders, or inside the working folder bound back.
        let covered: Vec<PathBuf> = plan.private.iter().chain(&plan.hide_dirs).cloned().collect();
        let exposed = |p: &Path| !covered.iter().any(|d| p.starts_with(d)) || p.starts_with(&i.cwd);
        plan.hide_files = files.into_iter().filter(|p| exposed(p)).collect();
        plan.sockets = i
            .host_sockets
            .iter()
            .filter(|s| !i.unix_sockets.contains(s) && exposed(s))
            .cloned()
            .collect();
        plan.read_only.retain(|p| exposed(p));
        // A cgroup tree delegated to the user would let CMD kill, freeze
        // or move the user's other processes (cgroup.kill, cgroup.procs,
        // v1's freezer and tasks files).
        if real_dir(Path::new(CGROUP)) {
            plan.read_only_trees.push(PathBuf::from(CGROUP));
        }
        // Kernel settings: a run as the host's root could otherwise write
        // root-owned ones (kernel.core_pattern runs a program as root).
        plan.read_only_trees.push(PathBuf::from("/proc/sys"));
        plan.hide_files.push(PathBuf::from("/proc/sysrq-trigger"));
        let mut pinned: Vec<PathBuf> = plan
            .hide_dirs
            .iter()
            .chain(&plan.hide_files)
            .chain(&plan.read_only)
            .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
            .filter(|a| a.parent().is_some() && !a.starts_with("/proc") && real_dir(a) && exposed(a))
            .collect();
        pinned.sort_by_key(|p| p.components().count());
        pinned.dedup();
        plan.pinned = pinned;
        Ok(plan)
    }
}

impl Inputs {
    /// The same inputs with every existing path resolved (symlinks,
    /// `..`); missing ones keep their parent resolved.
    fn canonical(&self) -> Inputs {
        let c = |p: &PathBuf| canonical(p);
        let all = |v: &[PathBuf]| v.iter().map(canonical).collect();
        Inputs {
            cwd: c(&self.cwd),
            audit_log: c(&self.audit_log),
            audit_key: c(&self.audit_key),
            rotates: self.rotates,
            guard_dirs: all(&self.guard_dirs),
            escalation_socket: self.escalation_socket.as_ref().map(c),
            configs: all(&self.configs),
            hide: all(&self.hide),
            unix_sockets: all(&self.unix_sockets),
            host_sockets: self.host_sockets.clone(),
            terminals: self.terminals.clone(),
        }
    }
}

fn canonical(p: &PathBuf) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir).map_or_else(|_| p.clone(), |d| d.join(name)),
        _ => p.clone(),
    }
}

/// Where the unified cgroup hierarchy is mounted.
const CGROUP: &str = "/sys/fs/cgroup";

/// The host's pseudo-terminals (`/dev/pts/N`) except those CMD inherits
/// as stdin, stdout or stderr: their input could be read from inside.
pub fn other_terminals() -> Vec<PathBuf> {
    let own: Vec<PathBuf> = (0..3)
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .collect();
    let Ok(dir) = std::fs::read_dir("/dev/pts") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .filter(|p| !own.contains(p))
        .collect()
}

/// Pathname sockets bound in this network namespace (`/proc/net/unix`):
/// every listening socket a host process has bound, wherever it sits.
pub fn host_sockets() -> Vec<PathBuf> {
    parse_proc_net_unix(&std::fs::read_to_string("/proc/self/net/unix").unwrap_or_default())
}

fn parse_proc_net_unix(text: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = text
        .lines()
        .skip(1)
        // Num RefCount Protocol Flags Type St Inode Path
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_unix_keeps_pathname_sockets_only() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 20595 /run/dbus/system_bus_socket\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 20596 @/tmp/.X11-unix/X0\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 20597\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 20598 /home/u/.ssh/cm-x\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 20599 /run/dbus/system_bus_socket\n";
        assert_eq!(
            parse_proc_net_unix(text),
            vec![
                PathBuf::from("/home/u/.ssh/cm-x"),
                PathBuf::from("/run/dbus/system_bus_socket")
            ]
        );
    }

    #[test]
    fn covered_by_private_or_hidden_folders() {
        let plan = Plan {
            private: vec!["/tmp".into()],
            hide_dirs: vec!["/root/.local/state/secureops".into()],
            ..Plan::default()
        };
        assert!(plan.covered(Path::new("/tmp/x.sock")));
        assert!(plan.covered(Path::new("/root/.local/state/secureops/audit.jsonl")));
        assert!(!plan.covered(Path::new("/tmpfoo/x")));
        assert!(!plan.covered(Path::new("/root/.ssh/cm")));
    }
}
