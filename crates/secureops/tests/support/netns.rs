//! A fake internet for `secureops run` tests, as root: two test hosts in a
//! network namespace the test creates (198.18.0.0/15 addresses), a TLS and
//! a plain HTTP upstream for an allowed name and a TCP+UDP canary that
//! counts what reaches it; removed (with their processes) on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Two test hosts in their own namespace, linked to the host by a veth
/// pair; removed (with their processes) on drop.
pub struct FakeInternet {
    pub ns: String,
    /// The allowed upstream's address.
    pub allowed: String,
    /// The canary's address.
    pub canary: String,
    /// CA of the TLS upstream, in `work` (CMD's working folder).
    pub ca: PathBuf,
    counts: PathBuf,
    children: Vec<Child>,
    /// Holds everything; `work` inside it is CMD's working folder.
    pub dir: tempfile::TempDir,
    /// CMD's working folder: the run's private /tmp hides the rest of `dir`.
    pub work: PathBuf,
}

impl FakeInternet {
    /// `None` (with the reason printed) where namespaces are impossible.
    pub fn start() -> Option<FakeInternet> {
        if !is_root() {
            eprintln!("SKIP: `secureops run` tests need root to build the fake internet (network namespaces, veth)");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id() % 10_000) * 10 + n;
        // A /24 no other namespace (a leftover, a parallel test) holds.
        let used = Command::new("ip").args(["-br", "addr"]).output().unwrap().stdout;
        let used = String::from_utf8_lossy(&used).into_owned();
        let net = (0..250)
            .map(|k| (std::process::id() * 7 + n * 31 + k) % 250 + 1)
            .find(|net| !used.contains(&format!("198.18.{net}.")))
            .unwrap();
        let ns = format!("sop{id}");
        let (host_if, ns_if) = (format!("sop{id}h"), format!("sop{id}n"));
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeInternet {
            ns: ns.clone(),
            allowed: format!("198.18.{net}.2"),
            canary: format!("198.18.{net}.3"),
            ca: dir.path().join("work/ca.pem"),
            work: dir.path().join("work"),
            counts: dir.path().join("canary.json"),
            children: Vec::new(),
            dir,
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["ip", "netns", "add", &ns],
            vec!["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if],
            vec!["ip", "link", "set", &ns_if, "netns", &ns],
            vec!["ip", "addr", "add", &format!("198.18.{net}.1/24"), "dev", &host_if],
            vec!["ip", "link", "set", &host_if, "up"],
            vec!["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", fake.allowed),
                "dev",
                &ns_if,
            ],
            vec![
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", fake.canary),
                "dev",
                &ns_if,
            ],
            vec!["ip", "netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_owned).collect())
        .collect();
        for step in &steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if !sh(&args) {
                eprintln!("SKIP: cannot build the fake internet ({})", args.join(" "));
                return None;
            }
        }
        let mut fake = fake;
        std::fs::create_dir_all(&fake.work).unwrap();
        let (cert, key) = (fake.dir.path().join("cert.pem"), fake.dir.path().join("key.pem"));
        assert!(sh(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=allowed.test",
            "-addext",
            "subjectAltName=DNS:allowed.test",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]));
        std::fs::copy(&cert, &fake.ca).unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let origin = Command::new("ip")
            .args(["netns", "exec", &ns, "python3"])
            .arg(fixtures.join("tls_origin.py"))
            .args([&fake.allowed, cert.to_str().unwrap(), key.to_str().unwrap()])
            .spawn()
            .unwrap();
        fake.children.push(origin);
        let canary = Command::new("ip")
            .args(["netns", "exec", &ns, "python3"])
            .arg(fixtures.join("canary.py"))
            .args([&fake.canary, fake.counts.to_str().unwrap()])
            .spawn()
            .unwrap();
        fake.children.push(canary);
        let plain = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "python3",
                "-m",
                "http.server",
                "--protocol",
                "HTTP/1.1",
                "80",
                "--bind",
                &fake.allowed,
            ])
            .current_dir(fake.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        fake.children.push(plain);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(fake.counts.exists()
            && std::net::TcpStream::connect((fake.allowed.as_str(), 443)).is_ok()
            && std::net::TcpStream::connect((fake.allowed.as_str(), 80)).is_ok())
        {
            assert!(Instant::now() < deadline, "fake internet did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(fake)
    }

    /// (TCP connections, UDP datagrams, bytes) seen by the canary.
    pub fn canary(&self) -> (u64, u64, u64) {
        std::thread::sleep(Duration::from_millis(200));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&self.counts).unwrap()).unwrap();
        (
            v["tcp"].as_u64().unwrap(),
            v["udp"].as_u64().unwrap(),
            v["bytes"].as_u64().unwrap(),
        )
    }

    pub fn config(&self) -> PathBuf {
        let path = self.dir.path().join("secureops.toml");
        std::fs::write(
            &path,
            format!(
                "[network]\negress_allowlist = [\"allowed.test\"]\nprivate_destinations = [\"198.18.0.0/15\"]\n\
                 [dns]\nupstream = []\nhosts = {{ \"allowed.test\" = [\"{}\"], \"denied.test\" = [\"{}\"] }}\n",
                self.allowed, self.canary
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting the namespace removes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A canary at the cloud metadata address `169.254.169.254` inside a
/// fake internet's namespace. The host reaches it for TCP to port 9999
/// only, through a policy rule and a routing table of its own, so the
/// host's other traffic to that address (a real metadata service) is
/// untouched. Rule, table and canary are removed on drop.
pub struct MetadataCanary {
    counts: PathBuf,
    child: Option<Child>,
    /// The policy rule's priority (ahead of the main table's 32766).
    priority: String,
    /// The routing table's number.
    table: String,
}

/// The metadata address and the one port the host routes to the canary.
pub const METADATA: &str = "169.254.169.254";
pub const METADATA_PORT: u16 = 9999;

impl MetadataCanary {
    /// `None` (with the reason printed) when the host cannot route to it.
    pub fn start(net: &FakeInternet) -> Option<MetadataCanary> {
        let (host_if, ns_if) = (format!("{}h", net.ns), format!("{}n", net.ns));
        let host_addr = format!("{}.1", net.allowed.rsplit_once('.').unwrap().0);
        // Per test process and call: parallel tests never share one.
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % 20;
        let priority = 1000 + (std::process::id() % 1400) * 20 + n;
        let mut canary = MetadataCanary {
            counts: net.dir.path().join("metadata-canary.json"),
            child: None,
            priority: priority.to_string(),
            table: (100_000 + priority).to_string(),
        };
        let (table, prio, dport) = (&canary.table, &canary.priority, METADATA_PORT.to_string());
        let steps: [&[&str]; 3] = [
            &[
                "ip",
                "netns",
                "exec",
                &net.ns,
                "ip",
                "addr",
                "add",
                "169.254.169.254/32",
                "dev",
                &ns_if,
            ],
            &[
                "ip",
                "route",
                "add",
                "169.254.169.254/32",
                "dev",
                &host_if,
                "src",
                &host_addr,
                "table",
                table,
            ],
            &[
                "ip",
                "rule",
                "add",
                "to",
                "169.254.169.254/32",
                "ipproto",
                "tcp",
                "dport",
                &dport,
                "lookup",
                table,
                "priority",
                prio,
            ],
        ];
        for step in steps {
            if !sh(step) {
                eprintln!("SKIP: cannot route to a metadata canary ({})", step.join(" "));
                return None;
            }
        }
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        canary.child = Some(
            Command::new("ip")
                .args(["netns", "exec", &net.ns, "python3"])
                .arg(fixtures.join("canary.py"))
                .args([METADATA, canary.counts.to_str().unwrap()])
                .spawn()
                .unwrap(),
        );
        // Up and reachable from the host (this connection is counted:
        // tests compare against the counts after start).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(canary.counts.exists() && std::net::TcpStream::connect((METADATA, METADATA_PORT)).is_ok()) {
            assert!(Instant::now() < deadline, "the metadata canary did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(canary)
    }

    /// (TCP connections, bytes) seen so far.
    pub fn counts(&self) -> (u64, u64) {
        std::thread::sleep(Duration::from_millis(200));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&self.counts).unwrap()).unwrap();
        (v["tcp"].as_u64().unwrap(), v["bytes"].as_u64().unwrap())
    }
}

impl Drop for MetadataCanary {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["rule", "del", "priority", &self.priority])
            .status();
        let _ = Command::new("ip")
            .args(["route", "flush", "table", &self.table])
            .status();
    }
}
