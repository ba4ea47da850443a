//! Agents keep working inside `secureops run`, as root, with real tools:
//! an interactive shell with job control under a real terminal, `git
//! clone` and `pip install` over HTTPS from an allowed origin of a fake
//! internet, a test server on the run's own loopback, an offline `cargo
//! build` from the home's toolchain, shared memory and POSIX semaphores,
//! and Docker, which works only once its socket is listed in
//! `[run] unix_sockets`. Every tool missing here is a SKIP, not a failure.
//!
//! Every run starts from the fake internet's `work` folder with the proxy
//! variables unset (outside, and inside the script, since the run sets
//! them), so the transparent path is what carries the traffic; what CMD
//! is handed lives in `work` (the run's /tmp is private), and the guard's
//! state goes to the test's own `XDG_STATE_HOME`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::netns::FakeInternet;

/// Prepended to every script: the run sets the proxy variables; without
/// them, tools connect directly and the transparent listener decides
/// (and without this machine's `PIP_FIND_LINKS`, pip uses only the index
/// it is given).
const NO_PROXY_VARS: &str =
    "unset HTTPS_PROXY HTTP_PROXY ALL_PROXY https_proxy http_proxy all_proxy NO_PROXY no_proxy PIP_FIND_LINKS\n";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Whether one of `tools` is not on `PATH` (then prints the SKIP line).
fn missing(test: &str, tools: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in tools {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            eprintln!("SKIP {test}: {tool} is not installed");
            return true;
        }
    }
    false
}

/// A process of the test (a server), killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A finished process: status and output, printed in assertion messages.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to its end, at most `limit` (then kills it and fails).
fn bounded(mut command: Command, limit: Duration) -> Ran {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            // The supervisor takes the run with it (parent-death signal).
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ran = Ran {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "{command:?} still running after {limit:?}; killed\n{ran}"
    );
    ran
}

/// `secureops run -c CONFIG --audit net.dir/audit.jsonl -- CMD...` from
/// `net.work`, with the test's state folder, no proxy variables and `env`.
fn secureops_run<S: AsRef<OsStr>>(net: &FakeInternet, config: &Path, env: &[(&str, S)], cmd: &[&str]) -> Command {
    let mut c = Command::new(support::bin());
    c.current_dir(&net.work)
        .env("XDG_STATE_HOME", net.dir.path().join("state"))
        .arg("run")
        .arg("-c")
        .arg(config)
        .arg("--audit")
        .arg(net.dir.path().join("audit.jsonl"))
        .arg("--")
        .args(cmd);
    for v in support::PROXY_VARS {
        c.env_remove(v);
    }
    c.env_remove("PIP_FIND_LINKS");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// `script` in bash inside a run (proxy variables unset), bounded.
fn run_script<S: AsRef<OsStr>>(
    net: &FakeInternet,
    config: &Path,
    env: &[(&str, S)],
    script: &str,
    limit: Duration,
) -> Ran {
    let script = format!("{NO_PROXY_VARS}{script}");
    bounded(secureops_run(net, config, env, &["bash", "-c", &script]), limit)
}

/// A config for `net` (in `net.dir`, out of CMD's sight): `rules` allowed,
/// the fake internet's names pinned, `extra` appended.
fn config(net: &FakeInternet, name: &str, rules: &[&str], extra: &str) -> PathBuf {
    let path = net.dir.path().join(name);
    let rules: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    std::fs::write(
        &path,
        format!(
            "[network]\negress_allowlist = [{}]\nprivate_destinations = [\"198.18.0.0/15\"]\n\
             [dns]\nupstream = []\nhosts = {{ \"allowed.test\" = [\"{}\"], \"denied.test\" = [\"{}\"] }}\n{extra}",
            rules.join(", "),
            net.allowed,
            net.canary
        ),
    )
    .unwrap();
    path
}

/// A folder for CMD's `HOME` inside its working folder.
fn home_in_work(net: &FakeInternet) -> PathBuf {
    let home = net.work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// Serves `root` over HTTPS as `allowed.test` (the fake internet's
/// certificate) on `port` of the allowed host, logging requests to `log`.
fn serve_tls_dir(net: &FakeInternet, port: u16, root: &Path, log: &Path) -> Killed {
    let child = Command::new("ip")
        .args(["netns", "exec", &net.ns, "python3"])
        .arg(fixture("tls_static.py"))
        .arg(&net.allowed)
        .arg(port.to_string())
        .arg(net.dir.path().join("cert.pem"))
        .arg(net.dir.path().join("key.pem"))
        .arg(root)
        .arg(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let server = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((net.allowed.as_str(), port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the TLS file server on :{port} did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Host commands preparing fixtures: must succeed, bounded.
fn host(command: Command) {
    let ran = bounded(command, Duration::from_secs(60));
    assert_eq!(ran.code, Some(0), "{ran}");
}

/// The audit entries of `net`'s runs for `host:port`, as (decision, via).
fn decisions(net: &FakeInternet, host: &str, port: u16) -> Vec<(String, String)> {
    support::read_entries(&net.dir.path().join("audit.jsonl"))
        .into_iter()
        .filter(|e| e["kind"] == "egress" && e["host"] == host && e["port"] == port)
        .map(|e| {
            (
                e["decision"].as_str().unwrap_or("").to_owned(),
                e["via"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[test]
fn interactive_bash_keeps_job_control() {
    let test = "interactive_bash_keeps_job_control";
    if missing(test, &["bash", "python3", "stty", "tput", "sleep"]) {
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    let config = config(&net, "secureops.toml", &["allowed.test"], "");
    // The prompt is set by the first command; its echo (`__''P__`) does
    // not match it. Ctrl-Z and Ctrl-C are typed once `sleep` holds the
    // terminal (the driver watches its foreground process group).
    let prompt = || serde_json::json!({ "expect": "__P__> " });
    let send = |keys: &str| serde_json::json!({ "send": keys });
    let expect = |re: &str| serde_json::json!({ "expect": re });
    let to_sleep = |keys: &str| serde_json::json!({ "send": keys, "foreground": "sleep" });
    let steps = serde_json::Value::Array(vec![
        expect("[#$] $"),
        send("PS1='__''P__> '\r"),
        prompt(),
        // The terminal is the driver's: its size shows through.
        send("stty size; tput cols\r"),
        expect(r"[\r\n]37 91\r\n91\r\n"),
        prompt(),
        // And the shell is inside the run: PID 1 is the run's init.
        send("tr '\\0' ' ' </proc/1/cmdline; echo\r"),
        expect(r"__ns-child"),
        prompt(),
        // Ctrl-Z stops the foreground job; bash reports it and lists it.
        send("sleep 100\r"),
        to_sleep("\u{1a}"),
        expect(r"Stopped\s+sleep 100"),
        prompt(),
        send("jobs\r"),
        expect(r"\[1\]\+\s+Stopped\s+sleep 100"),
        prompt(),
        // bash learns of the end asynchronously: poll, then `jobs` says it.
        send("kill %1; until [ -z \"$(jobs -s)\" ]; do sleep 0.1; done; jobs\r"),
        expect(r"Terminated\s+sleep 100"),
        prompt(),
        // Ctrl-C ends the foreground job, not the shell (nor the run).
        send("sleep 100\r"),
        to_sleep("\u{3}"),
        serde_json::json!({ "expect": "__P__> ", "timeout": 5 }),
        send("echo \"status=$?\" $((6*7))\r"),
        expect(r"[\r\n]status=130 42\r\n"),
        prompt(),
        send("exit 3\r"),
    ]);
    let mut driver = Command::new("python3");
    driver
        .arg(fixture("pty_driver.py"))
        .args(["37", "91", &steps.to_string(), "--"])
        .arg(support::bin())
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--audit")
        .arg(net.dir.path().join("audit.jsonl"))
        .args(["--", "bash", "--norc", "--noprofile", "-i"])
        .current_dir(&net.work)
        .env("XDG_STATE_HOME", net.dir.path().join("state"))
        .env("HOME", home_in_work(&net))
        .env("TERM", "xterm");
    for v in support::PROXY_VARS {
        driver.env_remove(v);
    }
    let ran = bounded(driver, Duration::from_secs(90));
    assert!(!ran.stdout.contains("TIMEOUT"), "the terminal session stalled:\n{ran}");
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(
        ran.stdout.lines().last(),
        Some("EXIT=3"),
        "`exit 3` must end `secureops run` with 3:\n{ran}"
    );
}

#[test]
fn git_clone_over_https_from_an_allowed_origin() {
    let test = "git_clone_over_https_from_an_allowed_origin";
    if missing(test, &["git", "python3"]) {
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    // A bare repository with one commit, served by a static ("dumb") HTTPS
    // server on allowed.test:8443.
    let site = net.dir.path().join("site");
    let src = net.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "cloned through the guard\n").unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let mut c = Command::new("git");
        c.args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir);
        host(c);
    };
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "hello.txt"]);
    git(&src, &["commit", "-q", "-m", "first"]);
    std::fs::create_dir_all(&site).unwrap();
    git(&site, &["clone", "-q", "--bare", src.to_str().unwrap(), "repo.git"]);
    git(&site.join("repo.git"), &["update-server-info"]);
    let log = net.dir.path().join("requests.log");
    let _server = serve_tls_dir(&net, 8443, &site, &log);
    let config = config(&net, "secureops.toml", &["allowed.test", "allowed.test:8443"], "");
    let home = home_in_work(&net);
    let ran = run_script(
        &net,
        &config,
        &[
            ("HOME", home.as_os_str()),
            ("GIT_SSL_CAINFO", net.ca.as_os_str()),
            ("GIT_TERMINAL_PROMPT", OsStr::new("0")),
        ],
        "git clone https://allowed.test:8443/repo.git clone && echo \"CONTENT=$(cat clone/hello.txt)\"",
        Duration::from_secs(120),
    );
    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(ran.code, Some(0), "{ran}\n--- origin saw ---\n{requests}");
    assert!(ran.stdout.contains("CONTENT=cloned through the guard"), "{ran}");
    assert!(requests.contains("GET /repo.git/info/refs"), "{requests}");
    let seen = decisions(&net, "allowed.test", 8443);
    assert!(
        !seen.is_empty() && seen.iter().all(|(d, via)| d == "allow" && via == "sni"),
        "the clone must go through the transparent listener: {seen:?}"
    );
}

#[test]
fn python_venv_and_pip_install_from_an_allowed_index() {
    let test = "python_venv_and_pip_install_from_an_allowed_index";
    if missing(test, &["python3"]) {
        return;
    }
    let venv = Command::new("python3").args(["-c", "import venv, ensurepip"]).output();
    if !venv.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP {test}: python3 has no venv/ensurepip");
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    // A hand-made wheel and a PEP 503 index for it, over HTTPS.
    let site = net.dir.path().join("site");
    let mut make = Command::new("python3");
    make.arg(fixture("simple_index.py"))
        .arg(&site)
        .args(["agentdemo", "1.0"]);
    host(make);
    let log = net.dir.path().join("requests.log");
    let _server = serve_tls_dir(&net, 8443, &site, &log);
    let config = config(&net, "secureops.toml", &["allowed.test:8443"], "");
    let home = home_in_work(&net);
    let ca = net.ca.display();
    // requests (inside pip) prefers these to `--cert`: unset.
    let script = format!(
        "set -e
unset REQUESTS_CA_BUNDLE CURL_CA_BUNDLE
python3 -m venv .venv
.venv/bin/pip install --disable-pip-version-check --timeout 20 --retries 0 \
  --index-url https://allowed.test:8443/simple/ --cert {ca} agentdemo
.venv/bin/python -c 'import agentdemo; print(\"ANSWER=%d FROM=%s\" % (agentdemo.ANSWER, agentdemo.__file__))'"
    );
    let ran = run_script(
        &net,
        &config,
        &[("HOME", home.as_os_str())],
        &script,
        Duration::from_secs(240),
    );
    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(ran.code, Some(0), "{ran}\n--- index saw ---\n{requests}");
    let venv = net.work.join(".venv");
    assert!(
        ran.stdout.contains(&format!("ANSWER=42 FROM={}/", venv.display())),
        "{ran}"
    );
    assert!(requests.contains("GET /simple/agentdemo/"), "{requests}");
    assert!(
        requests.contains("GET /packages/agentdemo-1.0-py3-none-any.whl"),
        "{requests}"
    );
}

/// Starts a loopback HTTP server inside the run and fetches from it.
const LOOPBACK: &str = r#"
python3 -m http.server 8765 --bind 127.0.0.1 >server.log 2>&1 &
for i in $(seq 100); do
  curl -s -o /dev/null --noproxy '*' -m 2 http://127.0.0.1:8765/ && break
  sleep 0.1
done
echo "BODY=$(curl -sS -m 5 http://127.0.0.1:8765/marker.txt)"
"#;

#[test]
fn a_test_server_on_loopback_inside_the_run() {
    let test = "a_test_server_on_loopback_inside_the_run";
    if missing(test, &["python3", "curl"]) {
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    std::fs::write(net.work.join("marker.txt"), "served on the run's loopback\n").unwrap();
    let config = config(&net, "secureops.toml", &["allowed.test"], "");
    let ran = run_script(&net, &config, &[] as &[(&str, &str)], LOOPBACK, Duration::from_secs(60));
    assert_eq!(ran.code, Some(0), "{ran}");
    assert!(ran.stdout.contains("BODY=served on the run's loopback"), "{ran}");
    // Nothing of it went through the guard.
    assert!(decisions(&net, "127.0.0.1", 8765).is_empty());
}

/// The same, with the environment the run gives CMD: `http_proxy` points at
/// the guard and `no_proxy` names the namespace's loopback, so curl and
/// Python's urllib reach the local server directly (before, `no_proxy` was
/// removed and the guard refused them with 403).
#[test]
fn a_test_server_on_loopback_inside_the_run_with_the_runs_proxy_variables() {
    let test = "a_test_server_on_loopback_inside_the_run_with_the_runs_proxy_variables";
    if missing(test, &["python3", "curl"]) {
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    std::fs::write(net.work.join("marker.txt"), "served on the run's loopback\n").unwrap();
    let config = config(&net, "secureops.toml", &["allowed.test"], "");
    let script = format!("echo \"http_proxy=$http_proxy\"\n{LOOPBACK}");
    let ran = bounded(
        secureops_run(&net, &config, &[] as &[(&str, &str)], &["bash", "-c", &script]),
        Duration::from_secs(60),
    );
    assert!(ran.stdout.contains("http_proxy=http://127.0.0.1:"), "{ran}");
    assert!(ran.stdout.contains("BODY=served on the run's loopback"), "{ran}");
}

#[test]
fn cargo_builds_offline_with_the_home_cache() {
    let test = "cargo_builds_offline_with_the_home_cache";
    if missing(test, &["cargo"]) {
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    let config = config(&net, "secureops.toml", &["allowed.test"], "");
    // HOME stays the real one: ~/.cargo and ~/.rustup are visible.
    let target = net.work.join("target");
    let ran = run_script(
        &net,
        &config,
        &[("CARGO_TARGET_DIR", target.as_os_str())],
        "set -e
cargo new --vcs none --quiet hello
cd hello
cargo build --offline
\"$CARGO_TARGET_DIR/debug/hello\"",
        Duration::from_secs(300),
    );
    assert_eq!(ran.code, Some(0), "{ran}");
    assert!(ran.stdout.lines().any(|l| l == "Hello, world!"), "{ran}");
    assert!(target.join("debug/hello").is_file(), "{ran}");
}

/// Shared memory, POSIX semaphores and a process pool, in Python.
const SHARED_MEMORY: &str = r#"
import multiprocessing as mp, os, stat
from multiprocessing import shared_memory

st = os.stat("/dev/shm")
print("SHM_MODE=%o" % stat.S_IMODE(st.st_mode))
print("SHM_START=%r" % sorted(os.listdir("/dev/shm")))

def square(x):
    return x * x

def child(name, sem):
    with sem:
        shm = shared_memory.SharedMemory(name=name)
        shm.buf[0] = shm.buf[0] + 1
        shm.close()

if __name__ == "__main__":
    with mp.Pool(2) as pool:
        print("POOL=%r" % pool.map(square, range(6)))
    shm = shared_memory.SharedMemory(create=True, size=16)
    shm.buf[0] = 41
    sem = mp.Semaphore(1)
    p = mp.Process(target=child, args=(shm.name, sem))
    p.start()
    p.join(30)
    print("SHARED=%d EXIT=%r" % (shm.buf[0], p.exitcode))
    shm.close()
    shm.unlink()
    print("SHM_END=%r" % sorted(os.listdir("/dev/shm")))
"#;

#[test]
fn shared_memory_works() {
    let test = "shared_memory_works";
    if missing(test, &["python3"]) {
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("SKIP {test}: this machine has no /dev/shm");
        return;
    }
    // A file of the host's /dev/shm, which the run must not see.
    let marker = PathBuf::from(format!("/dev/shm/sop-agents-{}", std::process::id()));
    std::fs::write(&marker, b"host").unwrap();
    std::fs::write(net.work.join("shm.py"), SHARED_MEMORY).unwrap();
    let config = config(&net, "secureops.toml", &["allowed.test"], "");
    let ran = run_script(
        &net,
        &config,
        &[] as &[(&str, &str)],
        "python3 shm.py",
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_file(&marker);
    assert_eq!(ran.code, Some(0), "{ran}");
    for want in [
        "SHM_MODE=1777",
        "SHM_START=[]",
        "POOL=[0, 1, 4, 9, 16, 25]",
        "SHARED=42 EXIT=0",
        "SHM_END=[]",
    ] {
        assert!(ran.stdout.lines().any(|l| l == want), "missing {want}:\n{ran}");
    }
}

/// A folder beside the build (not under /tmp, which the run replaces):
/// where a user's home would be; removed on drop.
struct HostDir(PathBuf);

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn docker_needs_its_socket_listed() {
    let test = "docker_needs_its_socket_listed";
    if missing(test, &["docker", "python3"]) {
        return;
    }
    let Some(net) = FakeInternet::start() else { return };
    // The fake daemon's socket where Docker Desktop and rootless Docker
    // put theirs, in a home the run would otherwise show.
    let home = HostDir(Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("agents-docker-{}", std::process::id())));
    let sock = home.0.join(".docker/run/docker.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let counts = net.dir.path().join("docker-connections");
    let daemon = Command::new("python3")
        .arg(fixture("fake_docker.py"))
        .arg(&sock)
        .arg(&counts)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Killed(daemon);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "the fake Docker daemon did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let connections = || std::fs::read_to_string(&counts).unwrap_or_default().lines().count();
    let docker_host = format!("unix://{}", sock.display());
    let inner_home = home_in_work(&net);
    let env = [
        ("DOCKER_HOST", docker_host.as_str()),
        ("HOME", inner_home.to_str().unwrap()),
    ];
    // The fake is good enough for the real CLI.
    let mut outside = Command::new("docker");
    outside.arg("ps").envs(env);
    let ran = bounded(outside, Duration::from_secs(30));
    assert_eq!(ran.code, Some(0), "docker ps against the fake, outside any run:\n{ran}");
    assert!(ran.stdout.starts_with("CONTAINER ID"), "{ran}");
    let before = connections();
    assert!(before > 0);

    // Not listed: the socket is masked, docker cannot connect, and the
    // daemon never hears of it.
    let unlisted = config(&net, "unlisted.toml", &["allowed.test"], "");
    let ran = run_script(&net, &unlisted, &env, "docker ps", Duration::from_secs(60));
    assert_ne!(ran.code, Some(0), "docker reached the unlisted socket:\n{ran}");
    assert!(
        ran.stderr.contains("connect to the Docker daemon") && ran.stderr.contains(&docker_host),
        "docker must say it cannot connect to {docker_host}:\n{ran}"
    );
    assert_eq!(connections(), before, "the daemon saw a connection from inside:\n{ran}");

    // Listed: bound in, docker works.
    let listed = config(
        &net,
        "listed.toml",
        &["allowed.test"],
        &format!("[run]\nunix_sockets = [{:?}]\n", sock.display().to_string()),
    );
    let ran = run_script(&net, &listed, &env, "docker ps", Duration::from_secs(60));
    assert_eq!(ran.code, Some(0), "docker ps with the socket listed:\n{ran}");
    assert!(ran.stdout.starts_with("CONTAINER ID"), "{ran}");
    assert!(connections() > before, "{ran}");

    // And the config says what listing it means.
    let out = Command::new(support::bin())
        .args(["config", "validate"])
        .arg(&listed)
        .env("XDG_STATE_HOME", net.dir.path().join("state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning:") && l.contains("docker.sock") && l.contains("Docker daemon")),
        "{text}"
    );
}
