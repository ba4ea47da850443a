//! `audit show --summary` and `audit tail [-f]` on real logs written by a
//! running `secureops proxy` (real curl and dig as clients).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{HttpOrigin, Proxy, curl};

const CONFIG: &str = "[network]\negress_allowlist = [\"allowed.test:*\"]\nprivate_destinations = [\"127.0.0.0/8\"]\n\
                      [dns]\nupstream = []\nhosts = { \"allowed.test\" = [\"127.0.0.1\"] }\n";

fn dig(proxy: &Proxy, name: &str) {
    let out = Command::new("dig")
        .arg(format!("@{}", proxy.dns.ip()))
        .args(["-p", &proxy.dns.port().to_string(), name, "A", "+tries=1", "+time=3"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"), "{out:?}");
}

fn stdout_lines(out: &std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The columns of a summary row, spaces collapsed.
fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn show_summary_counts_each_destination_by_decision_most_frequent_first_and_tail_prints_what_show_prints() {
    let origin = HttpOrigin::start();
    let owned = tempfile::tempdir().unwrap();
    let proxy = Proxy::start_at(owned.path(), CONFIG);
    let allowed = format!("http://allowed.test:{}/", origin.port());
    for _ in 0..3 {
        assert_eq!(curl(&proxy, &["http://a.test/"]).0, 403);
    }
    for _ in 0..2 {
        assert_eq!(curl(&proxy, &[allowed.as_str()]).0, 200);
        dig(&proxy, "a.test");
    }
    assert_eq!(curl(&proxy, &["https://b.test/"]).0, 403);
    assert_eq!(proxy.wait_decisions(8).len(), 8);
    let log = proxy.audit_path();
    assert!(proxy.stop().success());
    let dir = owned.path();
    let log_arg = log.to_str().unwrap();

    let lines = stdout_lines(&support::secureops(&["audit", "show", log_arg, "--summary"], dir));
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| columns(l)).collect();
    let allowed_dest = format!("allowed.test:{}", origin.port());
    assert_eq!(
        rows,
        [
            vec!["DESTINATION", "TOTAL", "ALLOW", "DENY", "ESCALATE"],
            vec!["a.test:80", "3", "0", "3", "0"],
            // DNS names count as the bare host, apart from connections.
            vec!["a.test", "2", "0", "2", "0"],
            vec![allowed_dest.as_str(), "2", "2", "0", "0"],
            vec!["b.test:443", "1", "0", "1", "0"],
        ],
        "{lines:#?}"
    );
    // With a decision filter only those count.
    let lines = stdout_lines(&support::secureops(
        &["audit", "show", log_arg, "--summary", "--decision", "allow"],
        dir,
    ));
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(columns(&lines[1]), [allowed_dest.as_str(), "2", "2", "0", "0"]);
    // --summary and --json do not mix.
    let out = support::secureops(&["audit", "show", log_arg, "--summary", "--json"], dir);
    assert_eq!(out.status.code(), Some(2));

    // tail without -f: every entry, as show prints it (show adds a header).
    let shown = stdout_lines(&support::secureops(&["audit", "show", log_arg], dir));
    let tailed = stdout_lines(&support::secureops(&["audit", "tail", log_arg], dir));
    assert_eq!(tailed.len(), 10, "start, 8 decisions, stop: {tailed:#?}");
    assert_eq!(tailed, shown[1..]);
    assert!(tailed.iter().all(|l| !l.contains('\u{1b}')), "colour in a pipe");
}

/// `audit tail -f LOG` with its stdout collected line by line.
struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    fn start(log: &Path) -> Tail {
        let mut child = Command::new(support::bin())
            .args(["audit", "tail", "-f"])
            .arg(log)
            .env_remove("NO_COLOR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Tail { child, lines }
    }

    /// Waits (at most 20 s) until `done` holds for the lines so far.
    fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if done(&lines) {
                return lines;
            }
            assert!(Instant::now() < deadline, "tail -f never showed {what}: {lines:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rotated(log: &Path) -> Vec<PathBuf> {
    (1..100)
        .map(|n| log.with_file_name(format!("secureops-audit.{n}.jsonl")))
        .take_while(|p| p.exists())
        .collect()
}

#[test]
fn tail_follow_sees_appends_across_rotations_and_stops_cleanly_on_sigint() {
    // Small files: a rotation every few entries, several of them while
    // a burst of requests lands within one of tail's polls.
    let proxy = Proxy::start(&format!("{CONFIG}[audit]\nrotate_bytes = 3000\n"));
    let log = proxy.audit_path();
    let tail = Tail::start(&log);
    tail.wait_for("the start entry", |l| {
        l.iter().any(|l| columns(l).get(1) == Some(&"start"))
    });
    assert_eq!(curl(&proxy, &["http://first.test/"]).0, 403);
    tail.wait_for("first.test", |l| l.iter().any(|l| l.contains("first.test:80")));
    // Twenty at once (bounded), then twenty more one by one.
    let burst: Vec<Child> = (0..20)
        .map(|i| {
            support::curl_command(&proxy.url(), &[format!("http://mark{i}.test/")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in burst {
        c.wait().unwrap();
    }
    for i in 20..40 {
        assert_eq!(curl(&proxy, &[format!("http://mark{i}.test/").as_str()]).0, 403);
    }
    let lines = tail.wait_for("all forty marks", |l| {
        (0..40).all(|i| l.iter().any(|l| l.contains(&format!("mark{i}.test:80"))))
    });
    let files = rotated(&log);
    assert!(files.len() >= 3, "the log rotated only {} times", files.len());
    // Each entry once: nothing read twice, nothing skipped.
    for i in 0..40 {
        let n = lines.iter().filter(|l| l.contains(&format!("mark{i}.test:80"))).count();
        assert_eq!(n, 1, "mark{i} shown {n} times: {lines:#?}");
    }
    let rotations = lines
        .iter()
        .filter(|l| columns(l).get(1) == Some(&"stop") && l.ends_with("rotate"))
        .count();
    assert!(
        rotations >= files.len(),
        "{rotations} rotation stops shown for {} files",
        files.len()
    );
    // Piped: plain text.
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "colour in a pipe");
    // Ctrl-C: exit 0, nothing on stderr.
    let mut tail = tail;
    assert!(support::netns::sh(&["kill", "-INT", &tail.child.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = tail.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tail -f did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    std::io::Read::read_to_string(tail.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(err, "", "tail wrote to stderr");
    drop(proxy);
}

#[test]
fn tail_follow_in_a_terminal_is_coloured_and_ctrl_c_ends_it_with_status_0() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP: python3 drives the terminal");
        return;
    }
    let proxy = Proxy::start(CONFIG);
    assert_eq!(curl(&proxy, &["http://a.test/"]).0, 403);
    assert_eq!(proxy.wait_decisions(1).len(), 1);
    let steps = serde_json::json!([
        { "expect": "\u{1b}\\[31mdeny" },
        { "expect": "a\\.test:80" },
        { "send": "\u{3}", "pause": 0.3 },
    ]);
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pty_driver.py"))
        .args(["24", "200", &steps.to_string(), "--"])
        .arg(support::bin())
        .args(["audit", "tail", "-f"])
        .arg(proxy.audit_path())
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("TIMEOUT"), "{text}");
    assert_eq!(text.lines().last(), Some("EXIT=0"), "{text}");
    assert!(!text.contains("secureops:"), "error text on Ctrl-C: {text}");
}
