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
        #[arg(long)]
        json: bool,
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
