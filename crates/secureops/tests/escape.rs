//! The escape drill of issue 17, against the real binary, as root and as an
//! ordinary user (a throwaway account): every door out of `secureops run`
//! that needs no network trick — host Unix sockets, the audit log and its
//! key, the config, other processes, leaked descriptors, AF_VSOCK,
//! io_uring, terminal injection, a daemonised grandchild — with a host-side
//! canary for each: a counting TCP server in a test namespace behind Unix
//! socket relays, a host process whose state is checked, and the bytes of
//! the key, the log and the config compared before and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::netns::{FakeInternet, is_root, sh};

/// A throwaway account with a home under /home; removed on drop.
struct Account {
    name: String,
    uid: u32,
    home: PathBuf,
}

impl Account {
    fn create(tag: &str) -> Option<Account> {
        let name = format!("sop{tag}{}", std::process::id() % 100_000);
        let home = PathBuf::from(format!("/home/{name}"));
        if !sh(&[
            "useradd",
            "--create-home",
            "--home-dir",
            home.to_str()?,
            "--shell",
            "/bin/sh",
            &name,
        ]) {
            eprintln!("SKIP: cannot create a throwaway account (useradd)");
            return None;
        }
        let out = Command::new("id").args(["-u", &name]).output().ok()?;
        let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        Some(Account { name, uid, home })
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-u", &self.name]).status();
        let _ = Command::new("userdel")
            .args(["--remove", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Unix sockets on the host that relay every connection to the canary's
/// port 80, counting connections.
struct Relays {
    paths: Vec<PathBuf>,
    hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Relays {
    fn start(paths: Vec<PathBuf>, target: String, owner: Option<u32>) -> Relays {
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        for path in &paths {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
            if let Some(uid) = owner {
                std::os::unix::fs::chown(path, Some(uid), None).unwrap();
            }
            listener.set_nonblocking(true).unwrap();
            let (hits, stop, target) = (Arc::clone(&hits), Arc::clone(&stop), target.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((mut client, _)) = listener.accept() {
                        hits.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut up) = std::net::TcpStream::connect((target.as_str(), 80)) {
                            let mut down = up.try_clone().unwrap();
                            let mut c2 = client.try_clone().unwrap();
                            std::thread::spawn(move || std::io::copy(&mut c2, &mut up));
                            std::thread::spawn(move || std::io::copy(&mut down, &mut client));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        Relays { paths, hits, stop }
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A host process killed when the test ends, passed or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Who runs `secureops run`.
enum Who<'a> {
    Root,
    /// The account itself, through setpriv: user namespaces are its only
    /// privilege.
    User(&'a Account),
}

/// Tools from the system, usable by any account (root's own PATH may
/// name folders other accounts cannot enter).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The doors, tried from inside; each prints `blocked NAME` or `OPEN NAME`.
const DRILL: &str = r#"
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "OPEN $name"; else echo "blocked $name"; fi; }
python3 -c 'print("PY=ok")'
for s in $RELAYS; do try "unix:$s" curl -sS -m 5 --unix-socket "$s" http://denied.test/; done
try read-key cat "$STATE/audit.key"
try list-state ls "$STATE"
try append-log sh -c 'echo forged >> "$1"' sh "$STATE/audit.jsonl"
try write-config sh -c 'printf "[network]\negress_allowlist = [\"*.test\"]\n" > secureops.toml'
try move-config mv secureops.toml moved.toml
try remove-config rm -f secureops.toml
try stop-host kill -STOP "$HOSTPID"
try kill-host kill -KILL "$HOSTPID"
try stop-supervisor kill -STOP "$SUPERVISOR"
try proc-host ls "/proc/$HOSTPID/fd"
try vsock python3 -c 'import socket; socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)'
try io_uring python3 -c 'import ctypes,sys; b=ctypes.create_string_buffer(120); sys.exit(0 if ctypes.CDLL(None).syscall(425, 4, b) >= 0 else 1)'
try tiocsti python3 -c 'import os,fcntl,termios; m,s=os.openpty(); fcntl.ioctl(s, termios.TIOCSTI, b"x")'
try new-userns unshare --user --map-root-user true
try nsenter nsenter --net=/proc/1/ns/net --user=/proc/1/ns/user true
try direct-tcp curl -sS -m 5 --noproxy '*' "http://$CANARY/"
try tmp-shared test -e "$HOSTMARK"
try host-terminal sh -c 'exec 3< "$1"' sh "$HOSTTTY"
try cgroup-write mkdir /sys/fs/cgroup/sop-escape-test
try hidden-relative cat secret.txt
try hidden-parent cat ../work/secret.txt
try ipc-host sh -c 'ipcs -m | grep -qw "$SHMID"'
try kernel-setting sh -c 'echo sop > /proc/sys/kernel/hostname'
try session-shared sh -c 'test "$(cut -d" " -f6 /proc/$$/stat)" = 0'
echo "FDS=$(ls /proc/self/fd | tr '\n' ' ')"
echo "PROCS=$(ls /proc | grep -c '^[0-9]')"
setsid sleep 3434 </dev/null >/dev/null 2>&1 &
echo done
"#;

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Runs the drill as `who` and checks every door with its canary.
fn drill(who: Who<'_>) {
    let Some(net) = FakeInternet::start() else { return };
    let (home, owner) = match &who {
        Who::Root => {
            let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("escape-root-{}", std::process::id()));
            std::fs::create_dir_all(&base).unwrap();
            (base, None)
        }
        Who::User(a) => (a.home.clone(), Some(a.uid)),
    };
    let work = home.join("work");
    let state_home = home.join("state");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let config = work.join("secureops.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\negress_allowlist = [\"allowed.test\"]\nprivate_destinations = [\"198.18.0.0/15\"]\n\
             [dns]\nupstream = []\nhosts = {{ \"allowed.test\" = [\"{}\"], \"denied.test\" = [\"{}\"] }}\n\
             [run]\nhide = [\"~/work/secret.txt\"]\n",
            net.allowed, net.canary
        ),
    )
    .unwrap();
    std::fs::write(work.join("secret.txt"), "secret").unwrap();
    // A SysV shared memory segment of the host's.
    let shm = Command::new("ipcmk").args(["-M", "64"]).output().unwrap();
    let shmid = String::from_utf8_lossy(&shm.stdout)
        .split_whitespace()
        .last()
        .unwrap_or("none")
        .to_owned();
    if let Some(uid) = owner {
        assert!(sh(&["chown", "-R", &format!("{uid}:{uid}"), home.to_str().unwrap()]));
    }
    let uid = owner.unwrap_or(0);
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    let relays = Relays::start(
        vec![
            PathBuf::from(format!("/tmp/sop-relay-{}.sock", std::process::id())),
            PathBuf::from(format!("/run/sop-relay-{}.sock", std::process::id())),
            run_user.join(format!("sop-relay-{}.sock", std::process::id())),
            home.join(".ssh/cm-relay.sock"),
            work.join("relay.sock"),
        ],
        net.canary.clone(),
        owner,
    );
    // The relays work from the host: the drill's refusals are the run's.
    let probe = Command::new("curl")
        .args(["-sS", "-m", "5", "--unix-socket"])
        .arg(&relays.paths[3])
        .arg("http://denied.test/")
        .output()
        .unwrap();
    assert!(probe.status.success() || relays.hits.load(Ordering::SeqCst) > 0);
    let before_canary = net.canary();
    let relay_hits = relays.hits.load(Ordering::SeqCst);
    let hostmark = PathBuf::from(format!("/tmp/sop-hostmark-{}", std::process::id()));
    std::fs::write(&hostmark, b"host").unwrap();
    let mut host = Command::new("setpriv");
    host.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .args(["sleep", "3333"]);
    let host = Reaped(host.spawn().unwrap());
    // A terminal of the user's, outside the run (its input could be read).
    let mut tty = Reaped(
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .args([
                "/usr/bin/python3",
                "-c",
                "import os,sys,time; m,s=os.openpty(); print(os.ttyname(s), flush=True); time.sleep(60)",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut tty_name = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tty.0.stdout.as_mut().unwrap()),
        &mut tty_name,
    )
    .unwrap();
    let tty_name = tty_name.trim().to_owned();
    assert!(tty_name.starts_with("/dev/pts/"), "{tty_name}");
    let relays_list: Vec<String> = relays.paths.iter().map(|p| p.display().to_string()).collect();
    let script = format!("SUPERVISOR=$(cat {}/supervisor.pid)\n{DRILL}", home.display());
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/supervisor.pid; exec \"$0\" run -c secureops.toml -- sh -c \"$1\"",
            home.display()
        ))
        .arg(support::bin())
        .arg(&script)
        .current_dir(&work)
        .env("HOME", &home)
        .env("XDG_STATE_HOME", &state_home)
        .env("STATE", state_home.join("secureops"))
        .env("RELAYS", relays_list.join(" "))
        .env("HOSTPID", host.0.id().to_string())
        .env("CANARY", &net.canary)
        .env("HOSTMARK", &hostmark)
        .env("HOSTTTY", &tty_name)
        .env("SHMID", &shmid)
        .env("PATH", SYSTEM_PATH)
        .stdin(Stdio::null());
    for v in support::PROXY_VARS {
        c.env_remove(v);
    }
    if let Who::User(_) = who {
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config_before = sha(&config);
    let out: Output = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "run failed: {text}\n{err}");
    assert!(text.contains("done"), "{text}\n{err}");
    // The python3 attempts ran (a python3 the account cannot execute would
    // fail them all and prove nothing).
    assert!(text.contains("PY=ok"), "{text}\n{err}");
    let open: Vec<&str> = text.lines().filter(|l| l.starts_with("OPEN")).collect();
    assert!(open.is_empty(), "doors open: {open:?}\n{text}\n{err}");
    let blocked = text.lines().filter(|l| l.starts_with("blocked")).count();
    assert_eq!(blocked, relays.paths.len() + 24, "{text}");
    // Nothing reached the canary or the relays.
    assert_eq!(net.canary(), before_canary, "the canary saw traffic");
    assert_eq!(relays.hits.load(Ordering::SeqCst), relay_hits, "a relay was reached");
    // Only what a command started the same way outside the run gets:
    // stdin, stdout, stderr, ls's own directory and whatever this test's
    // caller passed down; nothing of the guard's.
    let outside = Command::new("sh")
        .args(["-c", "ls /proc/self/fd | tr '\\n' ' '"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let outside: Vec<String> = String::from_utf8_lossy(&outside.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let fds = text.lines().find_map(|l| l.strip_prefix("FDS=")).unwrap();
    for fd in fds.split_whitespace() {
        assert!(
            outside.iter().any(|o| o == fd),
            "fd {fd} leaked into the run: {fds} (outside: {outside:?})"
        );
    }
    assert!(fds.split_whitespace().count() >= 4, "{fds}");
    // Only the run's own processes: init, sh, the command substitution.
    let procs: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("PROCS="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(procs <= 5, "{procs} processes visible: {text}");
    // The host process runs on, not stopped.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", host.0.id())).unwrap();
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next().unwrap();
    assert!(state == "S" || state == "R", "host process is {state}");
    drop((host, tty));
    let _ = std::fs::remove_dir("/sys/fs/cgroup/sop-escape-test");
    let _ = Command::new("ipcrm").args(["-m", &shmid]).status();
    // The daemonised grandchild did not outlive the run.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !support::pids_of("sleep\u{0}3434").is_empty() {
        assert!(Instant::now() < deadline, "a setsid grandchild outlived the run");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The config is unchanged; the log is the guard's alone and verifies.
    assert_eq!(sha(&config), config_before, "the config changed");
    let log = state_home.join("secureops/audit.jsonl");
    let key_before = sha(&state_home.join("secureops/audit.key"));
    assert!(!key_before.is_empty());
    let mut log_text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut log_text)
        .unwrap();
    assert!(!log_text.contains("forged"));
    let verify = Command::new(support::bin())
        .args(["audit", "verify"])
        .arg(&log)
        .env("XDG_STATE_HOME", &state_home)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let _ = std::fs::remove_file(&hostmark);
    if let Who::Root = who {
        let _ = std::fs::remove_dir_all(&home);
    }
}

#[test]
fn every_door_is_shut_as_root() {
    if !is_root() {
        eprintln!("SKIP: the escape drill builds test namespaces and needs root");
        return;
    }
    drill(Who::Root);
}

#[test]
fn every_door_is_shut_as_an_ordinary_user() {
    if !is_root() {
        eprintln!("SKIP: the escape drill creates a throwaway account and needs root");
        return;
    }
    let Some(account) = Account::create("e") else { return };
    drill(Who::User(&account));
}

/// `secureops` with a private state folder and home, from `cwd`.
fn secureops_in(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(support::bin());
    c.args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join("state"))
        .stdin(Stdio::null());
    for v in support::PROXY_VARS {
        c.env_remove(v);
    }
    c.output().unwrap()
}

/// A home-like folder outside /tmp (which is private inside a run).
fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("work")).unwrap();
    dir
}

#[test]
fn tier_lists_every_layer() {
    let home = scratch("tier");
    let out = secureops_in(&home, &home, &["tier"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for layer in ["network", "mount", "pid", "seccomp", "landlock"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{layer}: on (")) || l.starts_with(&format!("{layer}: off ("))),
            "no {layer} line: {text}"
        );
    }
    let out = secureops_in(&home, &home, &["tier", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_object().unwrap();
    assert_eq!(layers.len(), 5, "{v}");
    for (name, l) in layers {
        assert!(l["on"].is_boolean() && l["why"].is_string(), "{name}: {l}");
    }
    if is_root() {
        // This machine has every layer but Landlock's pathname sockets.
        for layer in ["network", "mount", "pid", "seccomp"] {
            assert_eq!(layers[layer]["on"], true, "{v}");
        }
    }
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn the_probe_finds_every_door_shut_as_root_and_as_an_ordinary_user() {
    if !is_root() {
        eprintln!("SKIP: tested as root and as a throwaway account");
        return;
    }
    let home = scratch("probe");
    let out = secureops_in(&home.join("work"), &home, &["tier", "--probe"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.lines().filter(|l| l.starts_with("blocked ")).count() >= 14,
        "{text}"
    );
    assert!(!text.contains("OPEN"), "{text}");
    let _ = std::fs::remove_dir_all(&home);
    let Some(account) = Account::create("p") else { return };
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", account.uid))
        .arg(format!("--regid={}", account.uid))
        .arg("--clear-groups")
        .arg(support::bin())
        .args(["tier", "--probe"])
        .current_dir(&account.home)
        .env("HOME", &account.home)
        .env("PATH", SYSTEM_PATH)
        .env_remove("XDG_STATE_HOME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("OPEN"), "{text}");
    assert!(
        text.contains("blocked vsock") && text.contains("blocked io_uring"),
        "{text}"
    );
    // The account's log and key went to its own state folder.
    assert!(account.home.join(".local/state/secureops/audit.key").exists());
}

#[test]
fn root_runs_the_command_as_another_account() {
    if !is_root() {
        eprintln!("SKIP: --user needs root");
        return;
    }
    let Some(account) = Account::create("u") else { return };
    let home = scratch("user");
    let work = home.join("work");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = secureops_in(
        &work,
        &home,
        &[
            "run",
            "--user",
            &account.name,
            "--",
            "sh",
            "-c",
            "id -u; echo \"HOME=$HOME\"; touch made; cat \"$1\" || echo NOKEY",
            "sh",
            home.join("state/secureops/audit.key").to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(account.uid.to_string().as_str()), "{text}");
    assert_eq!(lines.next(), Some(format!("HOME={}", account.home.display()).as_str()));
    assert!(text.contains("NOKEY"), "{text}");
    let made = std::fs::metadata(work.join("made")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), account.uid);
    // Only root may switch accounts.
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", account.uid))
        .arg(format!("--regid={}", account.uid))
        .arg("--clear-groups")
        .arg(support::bin())
        .args(["run", "--user", "root", "--", "true"])
        .current_dir(&account.home)
        .env("HOME", &account.home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn listed_sockets_are_let_in_and_named_hidden_paths_are_not() {
    let Some(net) = FakeInternet::start() else { return };
    let home = scratch("listed");
    let work = home.join("work");
    std::fs::create_dir_all(home.join(".config/gh")).unwrap();
    std::fs::write(home.join(".config/gh/hosts.yml"), "token: secret").unwrap();
    std::fs::write(home.join("notes.txt"), "private").unwrap();
    let allowed = home.join("agent.sock");
    let other = home.join("other.sock");
    let relays = Relays::start(vec![allowed.clone(), other.clone()], net.canary.clone(), None);
    let docker = home.join("docker.sock");
    std::fs::write(
        work.join("secureops.toml"),
        format!(
            "[run]\nunix_sockets = [\"~/agent.sock\"]\nhide = [\"~/.config/gh\", \"~/notes.txt\", \"~/missing\"]\n\
             [audit]\npath = \"{}\"\n",
            home.join("logs/audit.jsonl").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(home.join("logs")).unwrap();
    let script = format!(
        "curl -sS -m 5 --unix-socket {a} http://x/ >/dev/null 2>&1; echo ALLOWED=$?; \
         curl -sS -m 5 --unix-socket {o} http://x/ >/dev/null 2>&1 && echo OTHER=open || echo OTHER=blocked; \
         cat ~/.config/gh/hosts.yml 2>/dev/null || echo GH=hidden; \
         cat ~/notes.txt 2>/dev/null | grep -q private && echo NOTES=visible || echo NOTES=hidden; \
         ls ~/work >/dev/null && echo WORK=visible",
        a = allowed.display(),
        o = other.display()
    );
    let out = secureops_in(
        &work,
        &home,
        &["run", "-c", "secureops.toml", "--", "sh", "-c", &script],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // The listed socket reaches its server (the relay counts it; the
    // canary behind it is a plain TCP counter that never answers HTTP).
    assert_eq!(relays.hits.load(Ordering::SeqCst), 1, "{text}");
    for want in ["OTHER=blocked", "GH=hidden", "NOTES=hidden", "WORK=visible"] {
        assert!(text.contains(want), "missing {want}: {text}");
    }
    let entries = support::read_entries(&home.join("logs/audit.jsonl"));
    let start = entries.iter().find(|e| e["kind"] == "start").unwrap();
    assert!(
        start["detail"]
            .as_str()
            .unwrap_or("")
            .contains(allowed.to_str().unwrap()),
        "{start}"
    );
    // `config validate` warns about a socket that is a way around the guard.
    std::fs::write(
        home.join("d.toml"),
        format!("[run]\nunix_sockets = [\"{}\"]\n", docker.display()),
    )
    .unwrap();
    let out = secureops_in(&home, &home, &["config", "validate", "d.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("warning: [run] unix_sockets") && text.contains("Docker"),
        "{text}"
    );
    drop(relays);
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn a_rotating_log_in_the_working_folder_is_refused() {
    if !is_root()
        && !sh(&[
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "--mount",
            "--pid",
            "--fork",
            "true",
        ])
    {
        eprintln!("SKIP: no namespaces here");
        return;
    }
    let home = scratch("rotating");
    let work = home.join("work");
    std::fs::write(
        work.join("c.toml"),
        "[audit]\npath = \"audit.jsonl\"\nrotate_bytes = 100000\n",
    )
    .unwrap();
    let out = secureops_in(&work, &home, &["run", "-c", "c.toml", "--", "sh", "-c", "echo RAN"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}{err}");
    assert!(!text.contains("RAN"));
    assert!(err.contains("folder of its own"), "{err}");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn under_another_account_its_own_credential_files_taint() {
    // `~` in [context] is the account's home under --user, not root's: a
    // read of its ~/.aws/credentials taints the reader.
    let Some(net) = FakeInternet::start() else { return };
    let Some(account) = Account::create("c") else { return };
    let work = account.home.join("work");
    std::fs::create_dir_all(work.join("state")).unwrap();
    std::fs::create_dir_all(account.home.join(".aws")).unwrap();
    std::fs::write(account.home.join(".aws/credentials"), "[default]\nkey = secret\n").unwrap();
    std::fs::copy(&net.ca, work.join("ca.pem")).unwrap();
    std::fs::write(
        work.join("secureops.toml"),
        format!(
            "[network]\negress_allowlist = [\"allowed.test\", \"denied.test\"]\nprivate_destinations = [\"198.18.0.0/15\"]\n\
             [dns]\nupstream = []\nhosts = {{ \"allowed.test\" = [\"{}\"], \"denied.test\" = [\"{}\"] }}\n\
             [context]\ncredential_paths = [\"~/.aws/credentials\"]\n",
            net.allowed, net.canary
        ),
    )
    .unwrap();
    assert!(sh(&[
        "chown",
        "-R",
        &format!("{0}:{0}", account.uid),
        account.home.to_str().unwrap()
    ]));
    let script = "echo \"BEFORE=$(curl -sS -m 10 --cacert ca.pem https://allowed.test/)\"; \
                  cat ~/.aws/credentials >/dev/null; \
                  curl -sS -m 10 -k https://denied.test/ >/dev/null 2>&1 && echo AFTER=reached || echo AFTER=refused";
    let mut c = Command::new(support::bin());
    c.args(["run", "--user", &account.name, "-c", "secureops.toml", "--audit"])
        .arg(net.dir.path().join("audit.jsonl"))
        .args(["--", "sh", "-c", script])
        .current_dir(&work)
        .env("XDG_STATE_HOME", net.dir.path().join("state"))
        .stdin(Stdio::null());
    for v in support::PROXY_VARS {
        c.env_remove(v);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("BEFORE=hello from the allowed upstream"), "{text}");
    assert!(text.contains("AFTER=refused"), "{text}");
    // The canary's name is allowed: only the taint refused it.
    assert_eq!(net.canary(), (0, 0, 0), "the canary saw traffic");
}
