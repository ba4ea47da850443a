//! Command-line interface (PRODUCT.md "The user-facing contract").

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// SecureOps egress guard: every outbound connection of an AI coding agent
/// goes through an allowlisting proxy; a refusal means zero bytes leave the
/// machine, and every decision is one entry in a signed audit log.
#[derive(Debug, Parser)]
#[command(name = "secureops", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the egress proxy until SIGINT/SIGTERM. Point an agent's
    /// HTTPS_PROXY / HTTP_PROXY at the printed address.
    Proxy {
        /// Config file (TOML). Without it: built-in default, which denies everything.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Operational logs on stderr: `text` (human-readable) or `json`
        /// (one object a line). Level: SECUREOPS_LOG or RUST_LOG (default info).
        #[arg(long, value_enum, default_value_t, value_name = "FORMAT")]
        log_format: crate::logging::LogFormat,
    },
    /// Run CMD behind the guard and exit with its status.
    Run {
        /// Config file (TOML). Without it: built-in default, which denies everything.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Extra allowlist rule for this run (repeatable), e.g. --allow github.com
        #[arg(long = "allow", value_name = "RULE")]
        allow: Vec<String>,
        /// Audit log for this run (overrides [audit] path).
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
        /// Accept proxy-only enforcement: only set the proxy variables, so a
        /// tool that ignores them is not stopped.
        #[arg(long)]
        weak: bool,
        /// Run CMD as this account (root only; overrides [run] user). As
        /// root, CMD otherwise owns root's files.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Learn mode, for writing a first allowlist: every destination the
        /// allowlist lacks is let through and recorded (reason "learn: ...");
        /// unsafe addresses and credential taint are still refused. Never
        /// for untrusted code.
        #[arg(long)]
        learn: bool,
        /// No summary of refused (and learned) destinations when CMD ends.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// The guard's operational logs on stderr: `text` or `json` (one
        /// object a line). Level: SECUREOPS_LOG or RUST_LOG (default warn).
        #[arg(long, value_enum, default_value_t, value_name = "FORMAT")]
        log_format: crate::logging::LogFormat,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Dry-run a decision: prints allow/deny/escalate and why; exit 0 for
    /// allow, 1 for deny or escalate, 2 for a usage or config error.
    Check {
        /// Config file (TOML). Without it: built-in default, which denies everything.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Evaluate with this process's live context (its executable, process
        /// rules, credential files it holds open now).
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
        /// Extra allowlist rule, as `run --allow` takes it (repeatable), e.g.
        /// --allow @pypi
        #[arg(long = "allow", value_name = "RULE")]
        allow: Vec<String>,
        /// Destination, e.g. github.com or github.com:22 (no port means 443).
        #[arg(value_name = "HOST[:PORT]")]
        dest: String,
    },
    /// List the requests held for a person (escalations), from the running
    /// proxy's [escalation] socket.
    Pending {
        /// Config file (TOML) of the running proxy; its [escalation] socket is used.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// One JSON object per request.
        #[arg(long)]
        json: bool,
    },
    /// Let a held request through. Exit 0 when answered, 1 when ID is not
    /// pending, 2 when no proxy answers.
    Approve {
        /// Config file (TOML) of the running proxy.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also let later escalations of the same program to the same
        /// destination through, for the rest of the run.
        #[arg(long)]
        remember: bool,
        /// The request's id (from `secureops pending`).
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Refuse a held request. Exit 0 when answered, 1 when ID is not
    /// pending, 2 when no proxy answers.
    Deny {
        /// Config file (TOML) of the running proxy.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also refuse later escalations to the same destination without
        /// asking, for the rest of the run.
        #[arg(long)]
        remember: bool,
        /// The request's id (from `secureops pending`).
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Audit log tools.
    Audit {
        /// What to do with the log.
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Create an ed25519 signing key (mode 0600) and FILE.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print this platform's enforcement tier, then each confinement layer
    /// of `run` (on/off and why).
    Tier {
        /// Machine-readable output.
        #[arg(long, conflicts_with = "probe")]
        json: bool,
        /// Run the escape drill in a throwaway run on this machine: one line
        /// per attempt, `blocked NAME` or `OPEN NAME: why`; exit 1 if any is
        /// open. Run it on every new host.
        #[arg(long)]
        probe: bool,
    },
    /// Internal: set up the namespace for `run` and become CMD.
    #[command(name = "__ns-child", hide = true)]
    NsChild {
        /// Control socket of the supervisor.
        #[arg(long)]
        control: PathBuf,
        /// The command.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Configuration tools.
    Config {
        /// What to do with the config.
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// The built-in rule sets (@github, @pypi, ...), usable wherever a rule
    /// is: `--allow @pypi`, egress_allowlist = ["@github"]. Without NAME: one
    /// line per preset.
    Presets {
        /// A preset (with or without @): print its rules, one a line.
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// Policy authoring tools.
    Policy {
        /// What to do.
        #[command(subcommand)]
        action: PolicyCommand,
    },
    /// Print a shell completion script on stdout, e.g.
    /// `secureops completions bash > /etc/bash_completion.d/secureops`.
    Completions {
        /// The shell.
        #[arg(value_name = "SHELL")]
        shell: CompletionShell,
    },
    /// Print the man page (roff) on stdout, e.g. `secureops man | man -l -`.
    Man,
}

/// `secureops policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Allowlist rules for what audit logs show refused by policy or let
    /// through by `run --learn`, as a TOML fragment for a config (one rule a
    /// line, with its count); destinations the config already allows are
    /// left out.
    Suggest {
        /// Audit logs (JSON Lines), e.g. a rotated series.
        #[arg(required = true, value_name = "LOG")]
        logs: Vec<PathBuf>,
        /// The config the rules are for. Without it: the built-in default
        /// (allows nothing).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Shells `secureops completions` writes for.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CompletionShell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `audit export --format` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// OCSF 1.8 JSON lines: Network Activity (4001) and DNS Activity (4003).
    Ocsf,
}

/// `secureops audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check signatures, hash chain, sequence and closing entry of a log
    /// (several files: a rotated series, oldest first).
    Verify {
        /// Log files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Pin this public key instead of trusting the log's first entry.
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
        /// Accept a log that is still being written (no closing entry).
        #[arg(long)]
        open: bool,
        /// Check against this anchor instead of the one the guard keeps for
        /// the last FILE in its state folder.
        #[arg(long, value_name = "FILE")]
        anchor: Option<PathBuf>,
    },
    /// Print a log as a table (or filtered JSON lines with --json).
    Show {
        /// Log file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Only entries with this decision.
        #[arg(long)]
        decision: Option<DecisionFilter>,
        /// Pass matching lines through unchanged, for jq.
        #[arg(long, conflicts_with = "summary")]
        json: bool,
        /// One line per destination (host:port; DNS names as host) with
        /// its counts per decision, most frequent first.
        #[arg(long)]
        summary: bool,
    },
    /// Print a log's entries as `show` does; with -f keep printing new
    /// ones as they are appended, across rotations, until Ctrl-C.
    Tail {
        /// Log file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Follow: wait for new entries (and the next file after a rotation).
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Convert a log's decisions for a SIEM: one JSON object a line on
    /// stdout (start/stop markers are not exported). It does not check the
    /// signatures: run `audit verify` for that.
    Export {
        /// Log file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Output format.
        #[arg(long, value_name = "FORMAT")]
        format: ExportFormat,
    },
}

/// `--decision` values.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DecisionFilter {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// Escalated.
    Escalate,
}

/// `secureops config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file; errors name the line and column.
    Validate {
        /// Config file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}
