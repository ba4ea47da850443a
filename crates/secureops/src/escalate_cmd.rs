//! `[escalation]`: the control socket through which a person answers held
//! requests, and `secureops pending | approve ID | deny ID [--remember]`,
//! which talk to it.
//!
//! The socket is a Unix stream socket at `[escalation] socket` (relative to
//! the config file's folder), mode 0600, created only when the policy can
//! escalate. Protocol: one JSON request per line, one JSON reply line each:
//! `{"op":"pending"}`, `{"op":"approve","id":3}`,
//! `{"op":"deny","id":3,"remember":true}`. Only the proxy's own user (or
//! root) may connect; under `secureops run` a process inside the confined
//! command's network namespace may not, so the agent cannot approve its
//! own requests.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use secureops_proxy::escalation::{Escalations, MAX_PENDING, PendingRequest};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Loaded, OnTaint};
use crate::out::outln;

/// Control connections served at once; more wait in the backlog.
const MAX_CONTROL_CONNECTIONS: usize = 16;
/// Most bytes one control connection may send.
const MAX_CONTROL_BYTES: u64 = 64 * 1024;
/// Longest wait for one request line or reply, on either side.
const CONTROL_IDLE: Duration = Duration::from_secs(10);

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    /// List the held requests.
    Pending,
    /// Let request `id` through.
    Approve {
        id: u64,
        #[serde(default)]
        remember: bool,
    },
    /// Refuse request `id`.
    Deny {
        id: u64,
        #[serde(default)]
        remember: bool,
    },
}

/// One held request on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Held {
    id: u64,
    age_ms: u64,
    pid: Option<u32>,
    exe: Option<String>,
    host: String,
    port: u16,
    via: String,
    reason: String,
}

impl From<&PendingRequest> for Held {
    fn from(p: &PendingRequest) -> Self {
        Self {
            id: p.id,
            age_ms: u64::try_from(p.age.as_millis()).unwrap_or(u64::MAX),
            pid: p.pid,
            exe: p.exe.clone(),
            host: p.host.clone(),
            port: p.port,
            via: p.via.as_str().to_owned(),
            reason: p.reason.clone(),
        }
    }
}

/// A reply on the control socket.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Set when the id named is not held (answered, timed out, unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unknown_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Vec<Held>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answered: Option<Held>,
}

impl Reply {
    fn error(message: String) -> Self {
        Self {
            error: Some(message),
            ..Self::default()
        }
    }
}

/// Whether this configuration can produce an `Escalate` ruling.
fn can_escalate(loaded: &Loaded) -> bool {
    loaded
        .context
        .as_ref()
        .is_some_and(|c| c.on_taint == OnTaint::Escalate || c.rules.iter().any(|r| r.escalate))
}

/// The escalation broker and its control socket, while the guard runs.
pub(crate) struct Control {
    /// Where held requests wait (shared with the proxy context).
    pub(crate) broker: Arc<Escalations>,
    /// The socket's path.
    pub(crate) path: PathBuf,
    /// Device and inode of the socket we created (removed on stop only if
    /// it is still ours).
    ident: (u64, u64),
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Control {
    /// Creates the broker and serves its control socket, when the policy
    /// can escalate (`None` otherwise: no socket is created). Peers in
    /// network namespace `agent_netns` (the confined command's) are
    /// refused. Must run inside the runtime.
    pub(crate) fn start(loaded: &Loaded, agent_netns: Option<PathBuf>) -> anyhow::Result<Option<Self>> {
        if !can_escalate(loaded) {
            return Ok(None);
        }
        let path = loaded.path(&loaded.raw.escalation.socket);
        let listener = bind_private(&path)?;
        let meta = fs::symlink_metadata(&path).with_context(|| format!("{}", path.display()))?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let broker = Arc::new(Escalations::new(
            Duration::from_millis(loaded.raw.escalation.escalation_timeout_ms),
            MAX_PENDING,
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::clone(&broker), agent_netns, stop.clone()));
        Ok(Some(Self {
            broker,
            path,
            ident: (meta.dev(), meta.ino()),
            stop,
            task,
        }))
    }

    /// Refuses what is held and what comes later, stops serving the socket
    /// and removes it.
    pub(crate) async fn stop(self) {
        self.broker.close();
        self.stop.cancel();
        let _ = self.task.await;
        if fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.ident) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds a Unix socket at `path` that only its owner can connect to: bound
/// inside a fresh 0700 folder beside it, set to 0600, then renamed into
/// place, so it is never reachable with wider permissions. A stale socket
/// (nobody listening) is replaced; a live one, or anything that is not a
/// socket, is an error.
fn bind_private(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "escalation socket {} is in use by another secureops; stop it or set [escalation] socket",
                    path.display()
                );
            }
        }
        Ok(_) => bail!(
            "escalation socket {} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("escalation socket {}", path.display())),
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = tempfile::Builder::new()
        .prefix(".secureops-")
        .tempdir_in(parent)
        .with_context(|| format!("cannot create the escalation socket in {}", parent.display()))?;
    let tmp = dir.path().join("s");
    let listener = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot create the escalation socket {}", path.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot create the escalation socket {}", path.display()))?;
    Ok(listener)
}

async fn serve(
    listener: UnixListener,
    broker: Arc<Escalations>,
    agent_netns: Option<PathBuf>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let agent_netns = agent_netns.map(Arc::new);
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { return };
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "escalation socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let broker = Arc::clone(&broker);
        let agent_netns = agent_netns.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = handle(stream, &broker, agent_netns.as_deref().map(PathBuf::as_path)) => {}
            }
            drop(permit);
        });
    }
}

/// Whether the peer may list and answer escalations: the proxy's own user
/// (or root), and not a process of the confined command.
fn peer_allowed(stream: &UnixStream, agent_netns: Option<&Path>) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot identify the peer: {e}"))?;
    let me = rustix::process::geteuid().as_raw();
    if cred.uid() != me && cred.uid() != 0 {
        return Err(format!("uid {} may not answer escalations", cred.uid()));
    }
    if let Some(agent) = agent_netns {
        let pid = cred.pid().ok_or("cannot identify the peer process")?;
        match fs::read_link(format!("/proc/{pid}/ns/net")) {
            Ok(ns) if ns.as_path() != agent => {}
            Ok(_) => return Err("the confined command cannot answer its own escalations".into()),
            Err(e) => return Err(format!("cannot read the peer's network namespace: {e}")),
        }
    }
    Ok(())
}

async fn handle(stream: UnixStream, broker: &Escalations, agent_netns: Option<&Path>) {
    let allowed = peer_allowed(&stream, agent_netns);
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read.take(MAX_CONTROL_BYTES)).lines();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(CONTROL_IDLE, lines.next_line()).await {
        let reply = match &allowed {
            Ok(()) => respond(broker, &line),
            Err(why) => Reply::error(format!("refused: {why}")),
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| r#"{"ok":false}"#.to_owned());
        text.push('\n');
        let sent = tokio::time::timeout(CONTROL_IDLE, write.write_all(text.as_bytes())).await;
        if !matches!(sent, Ok(Ok(()))) || allowed.is_err() {
            return;
        }
    }
}

fn respond(broker: &Escalations, line: &str) -> Reply {
    let (id, approve, remember) = match serde_json::from_str::<Request>(line) {
        Err(e) => return Reply::error(format!("bad request: {e}")),
        Ok(Request::Pending) => {
            return Reply {
                ok: true,
                pending: Some(broker.pending().iter().map(Held::from).collect()),
                timeout_ms: Some(u64::try_from(broker.timeout().as_millis()).unwrap_or(u64::MAX)),
                ..Reply::default()
            };
        }
        Ok(Request::Approve { id, remember }) => (id, true, remember),
        Ok(Request::Deny { id, remember }) => (id, false, remember),
    };
    match broker.answer(id, approve, remember) {
        Ok(p) => {
            tracing::info!(id, approve, remember, host = %p.host, port = p.port, "escalation answered");
            Reply {
                ok: true,
                answered: Some(Held::from(&p)),
                ..Reply::default()
            }
        }
        Err(e) => Reply {
            error: Some(e.to_string()),
            unknown_id: Some(id),
            ..Reply::default()
        },
    }
}

// ---- the client side: `secureops pending | approve | deny` ----

/// The control socket named by `config` (or the built-in default).
fn socket_of(config: Option<&Path>) -> Result<PathBuf, String> {
    let loaded = config::load(config).map_err(|e| e.to_string())?;
    Ok(loaded.path(&loaded.raw.escalation.socket))
}

fn exchange(path: &Path, request: &Request) -> Result<Reply, String> {
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "no secureops proxy is answering escalations on {} ({e}); is it running with this config, and can its policy escalate?",
            path.display()
        )
    })?;
    let io = |e: std::io::Error| format!("escalation socket {}: {e}", path.display());
    stream.set_read_timeout(Some(CONTROL_IDLE)).map_err(io)?;
    stream.set_write_timeout(Some(CONTROL_IDLE)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(format!(
            "escalation socket {}: closed without an answer",
            path.display()
        ));
    }
    serde_json::from_str(&answer).map_err(|e| format!("escalation socket {}: bad answer: {e}", path.display()))
}

/// Control characters (an executable named with terminal escapes) are
/// shown escaped, never sent to the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn describe(h: &Held) -> String {
    let who = match (&h.exe, h.pid) {
        (Some(exe), Some(pid)) => format!("{} (pid {pid})", printable(exe)),
        (None, Some(pid)) => format!("pid {pid}"),
        (Some(exe), None) => printable(exe),
        (None, None) => "unknown process".to_owned(),
    };
    format!("{who} -> {}:{}", printable(&h.host), h.port)
}

/// `secureops pending`: the held requests (exit 0), or exit 2 when no proxy
/// answers on the socket.
pub(crate) fn pending(config: Option<&Path>, json: bool) -> ExitCode {
    let reply = socket_of(config).and_then(|path| exchange(&path, &Request::Pending));
    let reply = match reply {
        Ok(r) if r.ok => r,
        Ok(r) => {
            eprintln!("secureops: {}", r.error.unwrap_or_else(|| "request refused".into()));
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("secureops: {e}");
            return ExitCode::from(2);
        }
    };
    let held = reply.pending.unwrap_or_default();
    if json {
        for h in &held {
            outln!("{}", serde_json::to_string(h).unwrap_or_default());
        }
        return ExitCode::SUCCESS;
    }
    if held.is_empty() {
        outln!("no pending requests");
        return ExitCode::SUCCESS;
    }
    let rows: Vec<[String; 5]> = held
        .iter()
        .map(|h| {
            [
                h.id.to_string(),
                format!("{:.1}s", h.age_ms as f64 / 1000.0),
                h.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                h.exe.as_deref().map_or_else(|| "-".to_owned(), printable),
                format!("{}:{}", printable(&h.host), h.port),
            ]
        })
        .collect();
    let header = ["ID", "AGE", "PID", "EXE", "DESTINATION"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out
    };
    outln!("{}REASON", line(&header));
    for (row, h) in rows.iter().zip(&held) {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        outln!("{}{}", line(&cells), printable(&h.reason));
    }
    if let Some(ms) = reply.timeout_ms {
        outln!("(refused when not answered within {ms} ms: secureops approve ID | secureops deny ID [--remember])");
    }
    ExitCode::SUCCESS
}

/// `secureops approve ID` / `secureops deny ID [--remember]`: exit 0 when
/// answered, 1 when the id is not held, 2 when no proxy answers.
pub(crate) fn answer(config: Option<&Path>, id: u64, approve: bool, remember: bool) -> ExitCode {
    let request = if approve {
        Request::Approve { id, remember }
    } else {
        Request::Deny { id, remember }
    };
    let reply = match socket_of(config).and_then(|path| exchange(&path, &request)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("secureops: {e}");
            return ExitCode::from(2);
        }
    };
    match reply {
        Reply {
            ok: true,
            answered: Some(h),
            ..
        } => {
            let word = if approve { "approved" } else { "denied" };
            outln!("{word} {id}: {}", describe(&h));
            if remember {
                if approve {
                    outln!(
                        "remembered: later escalations of this program to {}:{} go through without asking",
                        printable(&h.host),
                        h.port
                    );
                } else {
                    outln!(
                        "remembered: later escalations to {}:{} are refused without asking",
                        printable(&h.host),
                        h.port
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Reply {
            unknown_id: Some(_),
            error,
            ..
        } => {
            eprintln!(
                "secureops: {}",
                error.unwrap_or_else(|| format!("no pending request {id}"))
            );
            ExitCode::from(1)
        }
        Reply { error, .. } => {
            eprintln!("secureops: {}", error.unwrap_or_else(|| "request refused".into()));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r: Request = serde_json::from_str(r#"{"op":"deny","id":3,"remember":true}"#).unwrap_or(Request::Pending);
        assert_eq!(r, Request::Deny { id: 3, remember: true });
        let r: Request = serde_json::from_str(r#"{"op":"approve","id":3}"#).unwrap_or(Request::Pending);
        assert_eq!(r, Request::Approve { id: 3, remember: false });
        assert!(serde_json::from_str::<Request>(r#"{"op":"pending"}"#).is_ok());
        assert!(serde_json::from_str::<Request>(r#"{"op":"approve"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"allow-all"}"#).is_err());
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("/tmp/\u{1b}[2Jcurl"), "/tmp/\\u{1b}[2Jcurl");
    }

    #[test]
    fn bind_private_is_0600_and_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.sock");
        let l = bind_private(&path).unwrap_or_else(|e| panic!("{e:#}"));
        let mode = fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
        // Live: refused.
        assert!(bind_private(&path).is_err());
        drop(l);
        // Stale: replaced.
        let _l = bind_private(&path).unwrap_or_else(|e| panic!("{e:#}"));
        // Not a socket: refused, left alone.
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap_or_else(|e| panic!("{e}"));
        assert!(bind_private(&file).is_err());
        assert_eq!(fs::read_to_string(&file).unwrap_or_default(), "x");
        // Only the socket is left in the folder (no temporary folders).
        let names: Vec<_> = fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
