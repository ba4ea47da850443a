//! Every command that prints ends quietly when its reader goes away: no
//! message, no panic, exit status 141 (128 + SIGPIPE, as a shell reports
//! for `yes | head -1`) once a write found the pipe closed, its usual
//! status otherwise. The real binary, real pipes, real `head -1`.
//!
//! Each command of [`cases`] runs twice:
//! - into a pipe whose reader is already gone (`cmd | true`): the first
//!   write fails, deterministically, so the status must be 141;
//! - into `head -1`: when the output is longer than a pipe buffer (64 KiB)
//!   the writer is still writing when head exits, so the status must be
//!   141; shorter outputs may fit the pipe before head leaves.
//!
//! To cover a new printing command, add a row to [`cases`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use secureops_audit::{AuditConfig, AuditFinding, AuditLog, Kind, Verdict, Via};
use support::*;

/// What a command's output looks like when nobody leaves early.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Size {
    /// Longer than a pipe buffer: `head -1` leaves while it writes.
    Long,
    /// A few lines.
    Short,
}

/// One printing command: its arguments, its status when read to the end,
/// and how much it prints.
struct Case {
    args: Vec<String>,
    status: i32,
    size: Size,
}

fn case(args: &[&str], status: i32, size: Size) -> Case {
    Case {
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        status,
        size,
    }
}

/// The table: every command that prints, with the files it needs in `fx`.
fn cases(fx: &Fixture) -> Vec<Case> {
    let log = fx.log.to_str().unwrap();
    let bad = fx.tampered.to_str().unwrap();
    let cfg = fx.config.to_str().unwrap();
    let proxy_cfg = fx.proxy_config.to_str().unwrap();
    let check_cfg = fx.check_config.to_str().unwrap();
    let key = fx.dir.path().join("keygen.key");
    vec![
        case(&["pending", "-c", proxy_cfg], 0, Size::Short),
        case(&["pending", "--json", "-c", proxy_cfg], 0, Size::Short),
        case(&["audit", "show", log], 0, Size::Long),
        case(&["audit", "show", "--json", log], 0, Size::Long),
        case(&["audit", "show", "--decision", "deny", log], 0, Size::Long),
        case(&["audit", "verify", log], 0, Size::Short),
        case(&["audit", "verify", bad], 1, Size::Short),
        case(&["keygen", "--out", key.to_str().unwrap()], 0, Size::Short),
        case(&["tier"], 0, Size::Short),
        case(&["tier", "--json"], 0, Size::Short),
        // `check` prints a config's warnings on stderr: its own config has none.
        case(&["check", "-c", check_cfg, "allowed.test"], 0, Size::Short),
        case(&["check", "-c", check_cfg, "denied.test"], 1, Size::Short),
        case(&["config", "validate", cfg], 0, Size::Short),
        case(&["audit", "show", "--summary", log], 0, Size::Short),
        case(&["audit", "tail", log], 0, Size::Long),
        case(&["audit", "export", log, "--format", "ocsf"], 0, Size::Long),
        case(&["policy", "suggest", log], 0, Size::Short),
        case(&["presets"], 0, Size::Short),
        case(&["presets", "github"], 0, Size::Short),
        case(&["completions", "bash"], 0, Size::Short),
        case(&["completions", "zsh"], 0, Size::Short),
        case(&["completions", "fish"], 0, Size::Short),
        case(&["man"], 0, Size::Short),
    ]
}

/// Entries in the test log: about 200 bytes each as a table row, so the
/// listing is several pipe buffers long.
const ENTRIES: usize = 3000;

struct Fixture {
    dir: tempfile::TempDir,
    log: PathBuf,
    tampered: PathBuf,
    config: PathBuf,
    check_config: PathBuf,
    proxy_config: PathBuf,
}

/// A real signed log written by the audit crate's writer, a copy with one
/// byte changed, and a config with a warning (two lines from `validate`).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let audit = AuditLog::open(AuditConfig::new(&log, dir.path().join("audit.key"))).unwrap();
    let findings: Vec<AuditFinding> = (0..ENTRIES)
        .map(|i| {
            AuditFinding::new(
                Kind::Egress,
                Verdict::Deny,
                format!("host{i}.denied.test is not in the egress allowlist (a reason long enough to fill rows)"),
            )
            .with_host(format!("host{i}.denied.test"))
            .with_port(443)
            .with_via(Via::Connect)
            .with_process(Some(4242), Some("/usr/bin/curl".to_owned()))
        })
        .collect();
    // Groups of 500, one signature each: `verify` stays quick in a debug build.
    for group in findings.chunks(500) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let appended = loop {
            if let Some(a) = audit.try_append_now(group) {
                break a;
            }
            assert!(Instant::now() < deadline, "the log's writer stays busy");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(appended.into_results().iter().all(Result::is_ok));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(audit.close()).unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.windows(5).position(|w| w == b"host7").unwrap();
    bytes[at + 4] = b'8';
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, bytes).unwrap();
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        "[proxy]\ntransparent_listen = \"127.0.0.1:0\"\n[network]\negress_allowlist = [\"allowed.test\"]\n[dns]\nupstream = []\n",
    )
    .unwrap();
    let check_config = dir.path().join("check-clean.toml");
    std::fs::write(
        &check_config,
        "[network]\negress_allowlist = [\"allowed.test\"]\n[dns]\nupstream = []\n",
    )
    .unwrap();
    Fixture {
        proxy_config: PathBuf::new(),
        check_config,
        dir,
        log,
        tampered,
        config,
    }
}

/// How one run ended.
struct Ended {
    status: Option<i32>,
    signal: Option<i32>,
    stderr: String,
}

fn finish(mut child: std::process::Child) -> Ended {
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after 60 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    Ended {
        status: status.code(),
        signal: status.signal(),
        stderr,
    }
}

fn command(args: &[String], dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .current_dir(dir)
        .env("XDG_STATE_HOME", state_home(dir))
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// `cmd | true`: the reader is gone before the command starts.
fn into_closed_pipe(args: &[String], dir: &Path) -> Ended {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = command(args, dir).stdout(writer).spawn().unwrap();
    finish(child)
}

/// `cmd | head -1`, with the real `head`.
fn into_head(args: &[String], dir: &Path) -> (Ended, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    // The command is the only writer and head the only reader from here on.
    let child = command(args, dir).stdout(writer).spawn().unwrap();
    let head = Command::new("head")
        .arg("-1")
        .stdin(reader)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let first = head.wait_with_output().unwrap();
    (finish(child), String::from_utf8_lossy(&first.stdout).into_owned())
}

fn check_quiet(what: &str, args: &[String], ended: &Ended, allowed: &[i32]) {
    let shown = args.join(" ");
    assert!(
        ended.stderr.is_empty(),
        "{what} `secureops {shown}`: stderr must stay empty, got:\n{}",
        ended.stderr
    );
    assert_eq!(ended.signal, None, "{what} `secureops {shown}`: killed by a signal");
    let status = ended.status.unwrap();
    assert!(
        allowed.contains(&status),
        "{what} `secureops {shown}`: exit {status}, want one of {allowed:?}"
    );
}

/// Holds two escalated requests in a real proxy, so `pending` has rows.
struct Held {
    proxy: Proxy,
    clients: Vec<JoinHandle<()>>,
}

fn hold_requests() -> Held {
    let curl = std::fs::canonicalize("/usr/bin/curl").unwrap();
    let config = format!(
        "[network]\negress_allowlist = []\nprivate_destinations = [\"127.0.0.0/8\"]\n\
         [dns]\nupstream = []\nhosts = {{ \"asked.test\" = [\"127.0.0.1\"] }}\n\
         [[context.process]]\nexe = \"{}\"\negress_allowlist = [\"asked.test:*\"]\nescalate = true\n\
         [escalation]\nescalation_timeout_ms = 600000\n",
        curl.display()
    );
    let proxy = Proxy::start(&config);
    // Nothing listens on these ports: the requests are never approved.
    let clients = [1, 2]
        .map(|port| {
            let url = proxy.url();
            std::thread::spawn(move || {
                let target = format!("http://asked.test:{port}/held");
                let _ = curl_command(&url, &["--max-time", "600", &target]).output();
            })
        })
        .into_iter()
        .collect();
    let cfg = proxy.dir.join("secureops.toml");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = secureops(&["pending", "--json", "-c", cfg.to_str().unwrap()], Path::new("/"));
        if String::from_utf8_lossy(&out.stdout).lines().count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "requests not held: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Held { proxy, clients }
}

#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    let mut fx = fixture();
    let held = hold_requests();
    fx.proxy_config = held.proxy.dir.join("secureops.toml");
    let cwd = fx.dir.path().to_path_buf();
    for c in cases(&fx) {
        let started = Instant::now();
        let _ = std::fs::remove_file(fx.dir.path().join("keygen.key"));
        let _ = std::fs::remove_file(fx.dir.path().join("keygen.key.pub"));
        // Read to the end: the usual status, nothing on stderr.
        let full = command(&c.args, &cwd).stdout(Stdio::piped()).output().unwrap();
        let shown = c.args.join(" ");
        assert_eq!(
            full.status.code(),
            Some(c.status),
            "`secureops {shown}`: {}",
            String::from_utf8_lossy(&full.stderr)
        );
        assert!(
            full.stderr.is_empty(),
            "`secureops {shown}`: {}",
            String::from_utf8_lossy(&full.stderr)
        );
        let lines = full.stdout.iter().filter(|&&b| b == b'\n').count();
        assert!(lines >= 1, "`secureops {shown}` printed nothing");
        if c.size == Size::Long {
            assert!(
                full.stdout.len() > 256 * 1024,
                "`secureops {shown}`: only {} bytes",
                full.stdout.len()
            );
        }
        let _ = std::fs::remove_file(fx.dir.path().join("keygen.key"));
        let _ = std::fs::remove_file(fx.dir.path().join("keygen.key.pub"));

        check_quiet("into a closed pipe:", &c.args, &into_closed_pipe(&c.args, &cwd), &[141]);
        let _ = std::fs::remove_file(fx.dir.path().join("keygen.key"));
        let _ = std::fs::remove_file(fx.dir.path().join("keygen.key.pub"));

        let (ended, first) = into_head(&c.args, &cwd);
        let allowed: &[i32] = match c.size {
            Size::Long => &[141],
            Size::Short => &[c.status, 141],
        };
        check_quiet("into head -1:", &c.args, &ended, allowed);
        let want = String::from_utf8_lossy(&full.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        // Rows with a time or an age differ between runs; compare the start.
        let stable = |s: &str| s.split_whitespace().next().unwrap_or_default().to_owned();
        if !c.args.contains(&"keygen".to_owned()) && !c.args.contains(&"--json".to_owned()) {
            assert_eq!(stable(&first), stable(&want), "`secureops {shown} | head -1`");
        }
        eprintln!("ok in {:?}: secureops {shown}", started.elapsed());
    }
    let Held { proxy, clients } = held;
    drop(proxy);
    for c in clients {
        c.join().unwrap();
    }
}
