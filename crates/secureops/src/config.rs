//! The TOML configuration (PRODUCT.md "Config file"): every key optional,
//! unknown keys are errors, and every error names the file, line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secureops_audit::{AuditConfig, FsyncPolicy, SignPolicy};
use secureops_policy::{Allowlist, Host, PrivateDestinations, normalize_host};
use secureops_proxy::{DnsConfig, ProxyConfig, SinkholeMode};
use serde::Deserialize;
use toml::Spanned;

mod rules;
mod run_section;
pub use rules::add_flag;
pub use run_section::{RunSection, expand};

/// A configuration error, located in its file.
#[derive(Debug)]
pub struct ConfigError {
    file: String,
    at: Option<(usize, usize)>,
    message: String,
}

/// `[metrics]` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where `/metrics` is served, e.g. `127.0.0.1:9464`.
    pub listen: std::net::SocketAddr,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[proxy]`
    pub proxy: ProxySection,
    /// `[network]`
    pub network: NetworkSection,
    /// `[dns]`
    pub dns: DnsSection,
    /// `[audit]`
    pub audit: AuditSection,
    /// `[context]`
    pub context: ContextSection,
    /// `[escalation]`: the control socket and how long a held request waits
    pub escalation: EscalationSection,
    /// `[run]`: host sockets and paths under `secureops run`
    pub run: RunSection,
    /// `[metrics]`: the Prometheus endpoint (off when absent)
    pub metrics: Option<MetricsSection>,
}

/// `[proxy]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub listen: SocketAddr,
    pub transparent_listen: Option<SocketAddr>,
    pub pdp_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub header_timeout_ms: u64,
    pub idle_timeout_s: u64,
    pub max_connections: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            transparent_listen: None,
            pdp_timeout_ms: 100,
            connect_timeout_ms: 5000,
            header_timeout_ms: 10_000,
            idle_timeout_s: 300,
            max_connections: 10_000,
        }
    }
}

/// `[network]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    pub egress_allowlist: Vec<Spanned<String>>,
    pub private_destinations: Vec<Spanned<String>>,
}

/// `[dns]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    pub listen: SocketAddr,
    /// `None`: the nameservers of `/etc/resolv.conf`.
    pub upstream: Option<Vec<Spanned<String>>>,
    pub sinkhole: Sinkhole,
    pub hosts: BTreeMap<Spanned<String>, Vec<IpAddr>>,
    /// Queries per second per client IP; 0 = unlimited.
    pub client_rate: u32,
    /// Burst size of the per-client rate limit.
    pub client_burst: u32,
    /// Longest wait for one upstream attempt.
    pub upstream_timeout_ms: u64,
    /// Most cached answers; 0 disables the cache.
    pub cache_entries: usize,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5354)),
            upstream: None,
            sinkhole: Sinkhole::Nxdomain,
            hosts: BTreeMap::new(),
            client_rate: 1000,
            client_burst: 2000,
            upstream_timeout_ms: 2000,
            cache_entries: 10_000,
        }
    }
}

/// `[dns] sinkhole`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sinkhole {
    Nxdomain,
    Zero,
}

/// `[audit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub path: PathBuf,
    pub signing_key: PathBuf,
    pub fsync: FsyncPolicy,
    pub sign: SignPolicy,
    pub rotate_bytes: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            path: "secureops-audit.jsonl".into(),
            signing_key: "secureops-audit.key".into(),
            fsync: FsyncPolicy::default(),
            sign: SignPolicy::default(),
            rotate_bytes: 0,
        }
    }
}

/// `[context]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextSection {
    pub credential_paths: Vec<String>,
    pub taint_window_ms: u64,
    pub taint_allowlist: Vec<Spanned<String>>,
    pub on_taint: OnTaint,
    /// Who a credential read taints: "process", "descendants" or
    /// "process-group" (default: the opener, its later descendants and its
    /// process group).
    pub taint_scope: TaintScopeKey,
    /// `[[context.process]]` rules by executable.
    pub process: Vec<ProcessRuleSection>,
}

impl Default for ContextSection {
    fn default() -> Self {
        Self {
            credential_paths: Vec::new(),
            taint_window_ms: 30_000,
            taint_allowlist: Vec::new(),
            on_taint: OnTaint::Deny,
            taint_scope: TaintScopeKey::ProcessGroup,
            process: Vec::new(),
        }
    }
}

/// `[context] taint_scope`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TaintScopeKey {
    Process,
    Descendants,
    ProcessGroup,
}

/// `[[context.process]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessRuleSection {
    /// Absolute path of the executable.
    pub exe: PathBuf,
    /// Lower-hex SHA-256 the binary must have (optional).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Extra destinations for this program only.
    #[serde(default)]
    pub egress_allowlist: Vec<Spanned<String>>,
    /// Ask a person instead of allowing outright.
    #[serde(default)]
    pub escalate: bool,
}

/// `[context] on_taint`
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnTaint {
    Deny,
    Escalate,
}

/// `[escalation]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationSection {
    pub socket: PathBuf,
    pub escalation_timeout_ms: u64,
}

impl Default for EscalationSection {
    fn default() -> Self {
        Self {
            socket: "secureops.sock".into(),
            escalation_timeout_ms: 30_000,
        }
    }
}

/// A configuration checked and turned into what the components take.
#[derive(Debug)]
pub struct Loaded {
    pub raw: Config,
    pub allowlist: Allowlist,
    pub private: PrivateDestinations,
    pub hosts: std::collections::HashMap<String, Vec<IpAddr>>,
    pub upstream: Vec<SocketAddr>,
    /// Folder that relative paths are relative to.
    pub base: PathBuf,
    /// Things accepted but not enforced by this version.
    pub warnings: Vec<String>,
    /// `[context]`, compiled; `None` when it sets nothing.
    pub context: Option<ContextLoaded>,
    /// Whether the file names `[audit] path` (else `run` keeps its log in
    /// the state folder, out of CMD's reach).
    pub audit_path_set: bool,
    /// Whether the file names `[audit] signing_key` (else `run` keeps the
    /// key in the state folder).
    pub audit_key_set: bool,
    /// For the log's `start` entry (`run`: the host sockets let in).
    pub start_note: Option<String>,
    /// The agent's home: `~` in `[context]` and the credential watch's
    /// root (`run --user`: the account's, not root's).
    pub home: PathBuf,
    /// What happens to a destination no rule admits (`run --learn`).
    pub mode: secureops_policy::Mode,
    /// `run`: told about every entry of the log, for the summary at the end.
    pub tally: Option<std::sync::Arc<dyn secureops_audit::AuditObserver>>,
}

/// `[context]` turned into what the PDP takes.
#[derive(Debug)]
pub struct ContextLoaded {
    pub globs: secureops_policy::CredentialGlobs,
    pub taint_allowlist: Allowlist,
    pub rules: Vec<secureops_proxy::ProcessRule>,
    pub window_ms: u64,
    pub scope: secureops_policy::TaintScope,
    pub on_taint: OnTaint,
}

fn rule_list(
    rules: &[Spanned<String>],
    what: &str,
    err_at: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Allowlist, ConfigError> {
    let mut list = Allowlist::new();
    for rule in rules {
        rules::add(&mut list, rule.get_ref()).map_err(|e| err_at(rule.span(), format!("{what}: {e}")))?;
    }
    Ok(list)
}

/// The guard's own state folder: `$XDG_STATE_HOME/secureops` when that is
/// set (absolute), else `/var/lib/secureops` for root, else
/// `~/.local/state/secureops`. `run` hides it from CMD.
pub fn state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p.join("secureops"),
        _ if rustix::process::geteuid().is_root() => PathBuf::from("/var/lib/secureops"),
        _ => agent_home().join(".local/state/secureops"),
    }
}

/// Where `run` keeps its audit log and key by default (in [`state_dir`]).
pub fn run_audit_default() -> (PathBuf, PathBuf) {
    let dir = state_dir();
    (dir.join("audit.jsonl"), dir.join("audit.key"))
}

/// The home of the user the agent runs as (the invoking user under sudo).
pub fn agent_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn context(
    c: &ContextSection,
    home: &Path,
    err_at: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Option<ContextLoaded>, ConfigError> {
    if c.credential_paths.is_empty() && c.process.is_empty() {
        return Ok(None);
    }
    let globs = secureops_policy::CredentialGlobs::new(&c.credential_paths, home)
        .map_err(|e| err_at(0..0, format!("[context] {e}")))?;
    let taint_allowlist = rule_list(&c.taint_allowlist, "[context] taint_allowlist", err_at)?;
    let mut rules = Vec::new();
    for p in &c.process {
        if !p.exe.is_absolute() {
            return Err(err_at(
                0..0,
                format!("[[context.process]] exe {:?} must be an absolute path", p.exe),
            ));
        }
        if let Some(h) = &p.sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(err_at(
                0..0,
                format!("[[context.process]] sha256 {h:?} is not 64 hex digits"),
            ));
        }
        rules.push(secureops_proxy::ProcessRule {
            exe: p.exe.clone(),
            sha256: p.sha256.as_ref().map(|h| h.to_ascii_lowercase()),
            allowlist: rule_list(&p.egress_allowlist, "[[context.process]] egress_allowlist", err_at)?,
            escalate: p.escalate,
        });
    }
    let scope = match c.taint_scope {
        TaintScopeKey::Process => secureops_policy::TaintScope::Process,
        TaintScopeKey::Descendants => secureops_policy::TaintScope::Descendants,
        TaintScopeKey::ProcessGroup => secureops_policy::TaintScope::ProcessGroup,
    };
    Ok(Some(ContextLoaded {
        globs,
        taint_allowlist,
        rules,
        window_ms: c.taint_window_ms,
        scope,
        on_taint: c.on_taint,
    }))
}

/// Loads `path`, or the built-in default when `None`.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    match path {
        None => check(Config::default(), "", "<built-in default>", PathBuf::from(".")),
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                file: name.clone(),
                at: None,
                message: format!("cannot read: {e}"),
            })?;
            let base = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            parse(&text, &name, base)
        }
    }
}

/// Parses and checks the text of a config file named `file` (for error
/// messages), with relative paths taken from `base`.
///
/// # Errors
/// The first problem, with its line and column where it has one.
pub fn parse(text: &str, file: &str, base: PathBuf) -> Result<Loaded, ConfigError> {
    let raw: Config = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_owned(),
        at: e.span().map(|s| line_col(text, s.start)),
        message: e.message().trim().to_owned(),
    })?;
    check(raw, text, file, base)
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn check(raw: Config, text: &str, file: &str, base: PathBuf) -> Result<Loaded, ConfigError> {
    let err_at = |span: std::ops::Range<usize>, message: String| ConfigError {
        file: file.to_owned(),
        at: (!text.is_empty()).then(|| line_col(text, span.start)),
        message,
    };
    let allowlist = rule_list(&raw.network.egress_allowlist, "[network] egress_allowlist", &err_at)?;
    let items: Vec<&str> = raw
        .network
        .private_destinations
        .iter()
        .map(|s| s.get_ref().as_str())
        .collect();
    let private = PrivateDestinations::parse(&items).map_err(|e| {
        let span = raw
            .network
            .private_destinations
            .get(e.index)
            .map_or(0..0, Spanned::span);
        err_at(span, format!("[network] private_destinations: {e}"))
    })?;
    let mut hosts = std::collections::HashMap::new();
    for (name, ips) in &raw.dns.hosts {
        let key = match normalize_host(name.get_ref()) {
            Ok(Host::Name(n)) => n,
            Ok(Host::Ip(_)) => {
                return Err(err_at(
                    name.span(),
                    format!("[dns] hosts: {:?} is an IP address, not a name", name.get_ref()),
                ));
            }
            Err(e) => {
                return Err(err_at(
                    name.span(),
                    format!("[dns] hosts: invalid name {:?}: {e}", name.get_ref()),
                ));
            }
        };
        hosts.entry(key).or_insert_with(Vec::new).extend(ips.iter().copied());
    }
    let upstream = match &raw.dns.upstream {
        Some(list) => list
            .iter()
            .map(|s| {
                parse_server(s.get_ref()).ok_or_else(|| {
                    err_at(
                        s.span(),
                        format!("[dns] upstream: invalid server {:?} (want IP or IP:PORT)", s.get_ref()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => resolv_conf_servers(Path::new("/etc/resolv.conf")),
    };
    if raw.dns.upstream_timeout_ms == 0 {
        return Err(err_at(0..0, "[dns] upstream_timeout_ms must be at least 1".into()));
    }
    if raw.proxy.max_connections == 0 {
        return Err(err_at(0..0, "[proxy] max_connections must be at least 1".into()));
    }
    let mut warnings = Vec::new();
    if raw.proxy.transparent_listen.is_some() {
        warnings.push("[proxy] transparent_listen is not served by this version (see README, roadmap)".into());
    }
    let context = context(&raw.context, &agent_home(), &err_at)?;
    let process_rules = raw.context.process.iter().flat_map(|p| &p.egress_allowlist);
    for rule in raw
        .network
        .egress_allowlist
        .iter()
        .chain(&raw.context.taint_allowlist)
        .chain(process_rules)
    {
        warnings.extend(rules::warnings(rule.get_ref()));
    }
    raw.run.check().map_err(|(span, m)| err_at(span, m))?;
    warnings.extend(raw.run.warnings());
    let table = text.parse::<toml::Table>().ok();
    let audit_set = |key: &str| table.as_ref().and_then(|t| t.get("audit")?.get(key)).is_some();
    Ok(Loaded {
        audit_path_set: audit_set("path"),
        audit_key_set: audit_set("signing_key"),
        start_note: None,
        home: agent_home(),
        mode: secureops_policy::Mode::Enforce,
        tally: None,
        raw,
        allowlist,
        private,
        hosts,
        upstream,
        base,
        warnings,
        context,
    })
}

fn parse_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// The `nameserver` lines of a resolv.conf (missing file: none).
pub fn resolv_conf_servers(path: &Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Loaded {
    /// The same policy for an agent whose home is `home` (`run --user`):
    /// `~` in `credential_paths` and the watch's root follow it.
    pub fn for_home(&mut self, home: &Path) -> Result<(), ConfigError> {
        let err_at = |_: std::ops::Range<usize>, message: String| ConfigError {
            file: "[context]".into(),
            at: None,
            message,
        };
        self.context = context(&self.raw.context, home, &err_at)?;
        self.home = home.to_path_buf();
        Ok(())
    }

    /// Resolves a configured path against the config file's folder.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// The proxy's limits and timeouts.
    pub fn proxy_config(&self) -> ProxyConfig {
        let p = &self.raw.proxy;
        ProxyConfig {
            listen: p.listen,
            pdp_timeout: Duration::from_millis(p.pdp_timeout_ms),
            connect_timeout: Duration::from_millis(p.connect_timeout_ms),
            header_timeout: Duration::from_millis(p.header_timeout_ms),
            idle_timeout: Duration::from_secs(p.idle_timeout_s),
            max_connections: p.max_connections,
            ..ProxyConfig::default()
        }
    }

    /// The DNS sinkhole's settings (`[dns]`).
    pub fn dns_config(&self) -> DnsConfig {
        let d = &self.raw.dns;
        DnsConfig {
            listen: d.listen,
            upstream: self.upstream.clone(),
            sinkhole: match d.sinkhole {
                Sinkhole::Nxdomain => SinkholeMode::Nxdomain,
                Sinkhole::Zero => SinkholeMode::Zero,
            },
            hosts: self.hosts.clone(),
            upstream_timeout: Duration::from_millis(d.upstream_timeout_ms),
            client_rate: d.client_rate,
            client_burst: d.client_burst,
            cache_entries: d.cache_entries,
            ..DnsConfig::default()
        }
    }

    /// The audit log settings, `path` overriding `[audit] path` when given.
    pub fn audit_config(&self, path: Option<&Path>) -> AuditConfig {
        let a = &self.raw.audit;
        AuditConfig {
            path: path.map_or_else(|| self.path(&a.path), Path::to_path_buf),
            signing_key: self.path(&a.signing_key),
            fsync: a.fsync,
            sign: a.sign,
            rotate_bytes: a.rotate_bytes,
            // Outside the log's folder, hidden from CMD by `run`.
            anchor_dir: Some(state_dir().join("anchors")),
            version: format!("secureops {}", env!("CARGO_PKG_VERSION")),
            start_note: self.start_note.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError {
            file: String::new(),
            at: None,
            message: e.to_string(),
        })?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).map_err(|e| ConfigError {
            file: String::new(),
            at: None,
            message: e.to_string(),
        })?;
        load(Some(&path))
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = load_str("[proxy]\nlisten = \"127.0.0.1:1\"\nlisten_typo = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3:1: "), "{e}");
        assert!(e.contains("listen_typo"), "{e}");
    }

    #[test]
    fn bad_rule_points_at_the_rule() {
        let e = load_str("[network]\negress_allowlist = [\n  \"ok.test\",\n  \"bad.test:0\",\n]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":4:3: "), "{e}");
    }

    #[test]
    fn presets_and_the_wildcard_lint() {
        let l = load_str("[network]\negress_allowlist = [\"@pypi\", \"*.github.io\", \"*.example.com\"]\n").unwrap();
        assert_eq!(l.allowlist.len(), 4);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].starts_with("*.github.io: "), "{:?}", l.warnings);
        let e = load_str("[network]\negress_allowlist = [\n  \"ok.test\",\n    \"*.co.uk\",\n]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":4:5: [network] egress_allowlist: \"*.co.uk\": \"co.uk\" is a public suffix"),
            "{e}"
        );
        let e = load_str("[context]\ncredential_paths = [\"**/.env\"]\ntaint_allowlist = [\"@nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":3:20: [context] taint_allowlist: unknown preset \"@nope\""),
            "{e}"
        );
    }

    #[test]
    fn default_denies_everything() {
        let l = load(None).unwrap();
        assert!(l.allowlist.is_empty());
        assert_eq!(l.raw.proxy.listen, SocketAddr::from(([127, 0, 0, 1], 3128)));
    }

    #[test]
    fn full_example_parses() {
        let l = load_str(
            r#"
[proxy]
listen = "127.0.0.1:3128"
transparent_listen = "127.0.0.1:3129"
pdp_timeout_ms = 100
connect_timeout_ms = 5000
header_timeout_ms = 10000
idle_timeout_s = 300
max_connections = 10000
[network]
egress_allowlist = ["github.com", "*.githubusercontent.com", "pypi.org:443"]
private_destinations = ["127.0.0.0/8"]
[dns]
listen = "127.0.0.1:5354"
upstream = ["127.0.0.53:53"]
sinkhole = "nxdomain"
hosts = { "Allowed.Test." = ["127.0.0.1"] }
[audit]
path = "secureops-audit.jsonl"
signing_key = "secureops-audit.key"
fsync = "batch"
sign = "batch"
rotate_bytes = 0
[context]
credential_paths = ["~/.aws/credentials", "**/.env", "~/.ssh/id_*"]
taint_window_ms = 30000
taint_allowlist = []
on_taint = "deny"
[escalation]
socket = "secureops.sock"
escalation_timeout_ms = 30000
"#,
        )
        .unwrap();
        assert_eq!(l.allowlist.len(), 3);
        assert!(l.hosts.contains_key("allowed.test"));
        assert_eq!(l.upstream, vec![SocketAddr::from(([127, 0, 0, 53], 53))]);
        assert!(l.audit_config(None).path.ends_with("secureops-audit.jsonl"));
    }

    #[test]
    fn dns_section_becomes_the_sinkhole_config() {
        let l = load_str(
            "[dns]\nlisten = \"127.0.0.1:0\"\nupstream = [\"127.0.0.53\"]\nsinkhole = \"zero\"\n\
             client_rate = 50\nclient_burst = 100\nupstream_timeout_ms = 700\ncache_entries = 0\n",
        )
        .unwrap();
        let d = l.dns_config();
        assert_eq!(d.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(d.upstream, vec![SocketAddr::from(([127, 0, 0, 53], 53))]);
        assert_eq!(d.sinkhole, SinkholeMode::Zero);
        assert_eq!((d.client_rate, d.client_burst, d.cache_entries), (50, 100, 0));
        assert_eq!(d.upstream_timeout, Duration::from_millis(700));
        let defaults = load(None).unwrap().dns_config();
        assert_eq!(defaults.listen, SocketAddr::from(([127, 0, 0, 1], 5354)));
        assert_eq!(defaults.sinkhole, SinkholeMode::Nxdomain);
        assert_eq!((defaults.client_rate, defaults.client_burst), (1000, 2000));
        let e = load_str("[dns]\nupstream_timeout_ms = 0\n").unwrap_err().to_string();
        assert!(e.contains("upstream_timeout_ms"), "{e}");
    }
}
