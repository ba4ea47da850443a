//! `secureops run` and `secureops tier`: a command behind the guard, and
//! how much the platform backs the guard.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use secureops_proxy::attribution::ProcNet;
use tokio::signal::unix::{SignalKind, signal};

use crate::confine;
use crate::out::outln;
use crate::serve::{Guard, block_on, load};

/// `secureops run`: CMD behind the guard; exits with CMD's status (128+N
/// when signal N ended it).
pub fn run(
    config: Option<&Path>,
    allow: &[String],
    audit: Option<&Path>,
    weak: bool,
    user: Option<&str>,
    cmd: &[String],
    options: crate::authoring::Options,
) -> anyhow::Result<ExitCode> {
    let mut loaded = load(config)?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.map_or_else(|| "<built-in default>".into(), |p| p.display().to_string()),
        "secureops run starting"
    );
    for rule in allow {
        crate::config::add_flag(&mut loaded.allowlist, "--allow", rule).map_err(anyhow::Error::msg)?;
    }
    let run_as = match user.or(loaded.raw.run.user.as_deref()) {
        Some(name) => {
            if !rustix::process::geteuid().is_root() {
                bail!("--user / [run] user needs root");
            }
            Some(confine::RunAs::lookup(name)?)
        }
        None => confine::RunAs::sudo_user(),
    };
    if run_as.is_none() && rustix::process::geteuid().is_root() {
        eprintln!(
            "secureops: warning: the command runs as root: it has no capabilities but owns root's files; \
             give it an account of its own with --user NAME"
        );
    }
    // The log and key stay out of CMD's working folder unless the user
    // put them somewhere on purpose (contract: the state folder).
    let (log, key) = crate::config::run_audit_default();
    if (audit.is_none() && !loaded.audit_path_set) || !loaded.audit_key_set {
        let dir = crate::config::state_dir();
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the state folder {} (set XDG_STATE_HOME)", dir.display()))?;
    }
    if audit.is_none() && !loaded.audit_path_set {
        loaded.raw.audit.path = log;
    }
    if !loaded.audit_key_set {
        loaded.raw.audit.signing_key = key;
    }
    let home = run_as
        .as_ref()
        .map_or_else(crate::config::agent_home, |r| r.home.clone());
    if run_as.is_some() {
        // `~` in [context] is the agent's home, not root's.
        loaded.for_home(&home)?;
    }
    let sockets: Vec<String> = loaded
        .raw
        .run
        .unix_sockets
        .iter()
        .map(|s| crate::config::expand(s.get_ref(), &home).display().to_string())
        .collect();
    if !sockets.is_empty() {
        loaded.start_note = Some(format!("run: host Unix sockets let in: {}", sockets.join(", ")));
    }
    let tally = crate::authoring::prepare(&mut loaded, options);
    // The namespace is created before the runtime starts (see confine).
    // A layer this machine should have and cannot put up stops the run
    // (fail-closed); --weak is the only way to run with less.
    // Decided before anything starts: a plan that cannot hold stops the
    // run before anything is logged or run.
    let plan = mount_plan(&loaded, config, audit, run_as.as_ref());
    let confined = confine::seccomp::supported()
        .map_err(|e| anyhow::anyhow!("no seccomp filter for this machine: {e}"))
        .and(plan)
        .and_then(|plan| Ok((plan, confine::spawn(cmd, run_as.as_ref())?)));
    let code = match confined {
        Ok((plan, (confined, listeners))) => run_confined(&loaded, audit, &plan, confined, listeners)?,
        Err(e) if weak => {
            eprintln!(
                "secureops: warning: {e:#}; running proxy-only (--weak): tools that ignore HTTPS_PROXY are not stopped"
            );
            run_weak(&loaded, audit, cmd)?
        }
        Err(e) => bail!(
            "{e:#}\nsecureops run refuses to start the command unconfined; rerun with --weak to accept proxy-only \
             enforcement (see `secureops tier`)"
        ),
    };
    crate::authoring::report(&tally, &loaded.audit_config(audit).path, options);
    Ok(code)
}

fn run_confined(
    loaded: &crate::config::Loaded,
    audit: Option<&Path>,
    plan: &confine::plan::Plan,
    mut confined: confine::Confined,
    listeners: confine::Listeners,
) -> anyhow::Result<ExitCode> {
    let pid = confined.child.id();
    block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut quit = signal(SignalKind::quit())?;
        let guard = Guard::start_confined(loaded, audit, listeners, ProcNet::new(pid)).await?;
        confined.go(plan).context("cannot start the command")?;
        tracing::info!(
            tier = secureops_proxy::EnforcementTier::KernelEnforced.as_str(),
            pid,
            "command started, confined"
        );
        let mut child = confined.child;
        let init = confined.init;
        let mut wait = tokio::task::spawn_blocking(move || child.wait());
        let status = loop {
            tokio::select! {
                status = &mut wait => break status.context("wait")??,
                _ = term.recv() => forward(init, rustix::process::Signal::TERM),
                _ = int.recv() => forward(init, rustix::process::Signal::INT),
                _ = hup.recv() => forward(init, rustix::process::Signal::HUP),
                _ = quit.recv() => forward(init, rustix::process::Signal::QUIT),
            }
        };
        tracing::info!(%status, "command exited; stopping the guard");
        guard.stop().await?;
        Ok(exit_code(status))
    })
}

/// The mount plan of this run: what CMD must not see or change.
fn mount_plan(
    loaded: &crate::config::Loaded,
    config: Option<&Path>,
    audit: Option<&Path>,
    run_as: Option<&confine::RunAs>,
) -> anyhow::Result<confine::plan::Plan> {
    let cwd = std::env::current_dir().context("cannot read the working folder")?;
    let home = run_as.map_or_else(crate::config::agent_home, |r| r.home.clone());
    let audit_config = loaded.audit_config(audit);
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { cwd.join(p) };
    let expand = |list: &[toml::Spanned<String>]| -> Vec<PathBuf> {
        list.iter().map(|s| crate::config::expand(s.get_ref(), &home)).collect()
    };
    if confine::plan::PRIVATE.iter().any(|p| cwd == Path::new(p)) {
        eprintln!(
            "secureops: warning: the command's working folder is {}: the host's copy stays visible to it, \
             not a private one; run it from a folder of its own",
            cwd.display()
        );
    }
    let inputs = confine::plan::Inputs {
        cwd: cwd.clone(),
        audit_log: absolute(audit_config.path.clone()),
        audit_key: absolute(audit_config.signing_key.clone()),
        rotates: audit_config.rotate_bytes > 0,
        guard_dirs: vec![crate::config::state_dir()],
        // Masked when the guard has made it by the time CMD starts.
        escalation_socket: Some(absolute(loaded.path(&loaded.raw.escalation.socket))),
        configs: config.map(|c| absolute(c.to_path_buf())).into_iter().collect(),
        hide: expand(&loaded.raw.run.hide),
        unix_sockets: expand(&loaded.raw.run.unix_sockets),
        host_sockets: confine::plan::host_sockets(),
        terminals: confine::plan::other_terminals(),
    };
    confine::plan::Plan::build(&inputs)
}

/// Proxy-only: the proxy on an ephemeral loopback port and the proxy
/// variables; nothing stops a tool that ignores them.
fn run_weak(loaded: &crate::config::Loaded, audit: Option<&Path>, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let Some((program, args)) = cmd.split_first() else {
        bail!("no command given")
    };
    block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Each run gets its own ephemeral port: two runs never collide.
        let guard = Guard::start(loaded, audit, Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
        let url = format!("http://{}", guard.addr);
        let mut child = tokio::process::Command::new(program);
        child.args(args);
        crate::confine::proxy_env(child.as_std_mut(), &url, None);
        let mut child = child.spawn().with_context(|| format!("cannot start {program:?}"))?;
        // Only now: the command keeps the open-file limit it was given.
        crate::serve::raise_fd_limit(loaded.proxy_config().max_connections);
        let pid = child.id().unwrap_or(0);
        tracing::info!(
            tier = secureops_proxy::EnforcementTier::ProxyOnly.as_str(),
            pid,
            proxy = %guard.addr,
            "command started with proxy variables only (--weak)"
        );
        let status = loop {
            tokio::select! {
                status = child.wait() => break status?,
                _ = term.recv() => forward_raw(pid, rustix::process::Signal::TERM),
                _ = int.recv() => forward_raw(pid, rustix::process::Signal::INT),
            }
        };
        tracing::info!(%status, "command exited; stopping the guard");
        guard.stop().await?;
        Ok(exit_code(status))
    })
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn forward(pid: rustix::process::Pid, sig: rustix::process::Signal) {
    let _ = rustix::process::kill_process(pid, sig);
}

fn forward_raw(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        forward(pid, sig);
    }
}

/// One confinement layer as `tier` reports it.
pub struct Layer {
    /// `network`, `mount`, `pid`, `seccomp` or `landlock`.
    pub name: &'static str,
    /// Whether `run` puts it up on this machine.
    pub on: bool,
    /// What it does here, or why it is off.
    pub why: String,
}

/// The layers `run` would put up on this machine.
pub fn layers() -> Vec<Layer> {
    let ns = confine::probe();
    let ns_layer = |name, on_why: &str| Layer {
        name,
        on: ns.is_ok(),
        why: match &ns {
            Ok(()) => on_why.to_owned(),
            Err(e) => e.clone(),
        },
    };
    let abi = confine::landlock::abi();
    vec![
        ns_layer(
            "network",
            "own network namespace: TCP to the guard, DNS to the sinkhole, everything else dropped (nftables)",
        ),
        ns_layer(
            "mount",
            "own mount namespace: private /tmp, /var/tmp, /run, /dev/shm; audit files, [run] hide and host sockets hidden; configs read-only",
        ),
        ns_layer("pid", "own PID namespace and /proc; an init of ours kills what CMD leaves behind"),
        match confine::seccomp::supported() {
            Ok(()) => Layer {
                name: "seccomp",
                on: true,
                why: "filter refuses AF_VSOCK/packet/bluetooth/non-route netlink sockets, io_uring, ptrace, process_vm_*, bpf, setns, mount API, new namespaces, TIOCSTI".into(),
            },
            Err(e) => Layer {
                name: "seccomp",
                on: false,
                why: e,
            },
        },
        Layer {
            name: "landlock",
            on: abi >= 6,
            why: match abi {
                0 => "the kernel has no Landlock".into(),
                1..=5 => format!("ABI {abi}: no signal or abstract-socket scoping before ABI 6 (Linux 6.12)"),
                6..=8 => format!(
                    "ABI {abi}: signal and abstract-socket scoping; pathname sockets need ABI 9 (Linux 7.1), masked by the mount layer instead"
                ),
                _ => format!("ABI {abi}: signal and abstract-socket scoping, pathname sockets (resolve-unix)"),
            },
        },
    ]
}

/// `secureops tier`: the tier as the first word, then why, then a line
/// per layer.
pub fn tier(json: bool) {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let bpf_lsm = lsm.split(',').any(|l| l.trim() == "bpf");
    let root = rustix::process::geteuid().is_root();
    let layers = layers();
    let (tier, why) = match confine::probe() {
        Ok(()) => (
            secureops_proxy::EnforcementTier::KernelEnforced,
            format!(
                "`secureops run` confines commands in a {} with nftables redirecting all TCP to the proxy and DNS to the sinkhole; other traffic is dropped",
                confine::describe()
            ),
        ),
        Err(e) => (
            secureops_proxy::EnforcementTier::ProxyOnly,
            format!("{e}; `secureops run` needs --weak and only sets proxy variables"),
        ),
    };
    let credwatch = secureops_proxy::credwatch::CredWatch::probe();
    let cred_note = match &credwatch {
        Ok(()) => "credential-file watch (fanotify) available: [context] taint is enforced".to_owned(),
        Err(e) => e.to_string(),
    };
    let lsm_note = if bpf_lsm {
        "BPF LSM listed (not used yet)"
    } else {
        "BPF LSM not listed or securityfs not mounted"
    };
    if json {
        let layer_map: serde_json::Map<String, serde_json::Value> = layers
            .iter()
            .map(|l| (l.name.to_owned(), serde_json::json!({"on": l.on, "why": l.why})))
            .collect();
        let v = serde_json::json!({
            "tier": tier.as_str(),
            "why": why,
            "layers": layer_map,
            "landlock_abi": confine::landlock::abi(),
            "root": root,
            "bpf_lsm": bpf_lsm,
            "credential_watch": credwatch.is_ok(),
        });
        outln!("{v}");
    } else {
        outln!("{} — {why}", tier.as_str());
        for l in &layers {
            outln!("{}: {} ({})", l.name, if l.on { "on" } else { "off" }, l.why);
        }
        outln!("running as root: {root}; {lsm_note}");
        outln!("{cred_note}");
    }
}
