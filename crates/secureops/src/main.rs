//! `secureops`: the binary that wires the policy, the enforcement point and
//! the audit log together. Each subcommand lives in its own module.
#![forbid(unsafe_code)]
// Every line to stdout goes through `out` (`outln!`), which ends the
// process quietly when the reader goes away (`… | head -1`); `println!`
// would panic there.
#![warn(clippy::print_stdout)]

mod audit_cmd;
mod check;
mod cli;
mod confine;
mod escalate_cmd;
mod out;
mod probe;
mod run;
mod serve;

use std::process::ExitCode;

use clap::Parser;
// The config loader is the library half of this package (src/lib.rs), so
// the fuzz targets can reach it; `crate::config` still names it here.
use secureops::config;

use crate::cli::{Cli, Command, ConfigCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::NsChild { control, cmd } = &cli.command {
        // Before anything else: this process must stay single-threaded.
        return confine::child_main(control, cmd);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Proxy { config } => serve::proxy(config.as_deref()),
        Command::Run {
            config,
            allow,
            audit,
            weak,
            user,
            cmd,
        } => run::run(config.as_deref(), &allow, audit.as_deref(), weak, user.as_deref(), &cmd),
        Command::Check { config, pid, dest } => return check::check(config.as_deref(), pid, &dest),
        Command::Audit { action } => return audit_cmd::audit(action),
        Command::Pending { config, json } => return escalate_cmd::pending(config.as_deref(), json),
        Command::Approve { config, remember, id } => {
            return escalate_cmd::answer(config.as_deref(), id, true, remember);
        }
        Command::Deny { config, remember, id } => return escalate_cmd::answer(config.as_deref(), id, false, remember),
        Command::Keygen { out } => audit_cmd::keygen(&out),
        Command::Tier { json, probe: true } => {
            let _ = json;
            probe::probe()
        }
        Command::Tier { json, probe: false } => {
            run::tier(json);
            Ok(ExitCode::SUCCESS)
        }
        Command::NsChild { .. } => Ok(ExitCode::from(2)),
        Command::Config {
            action: ConfigCommand::Validate { file },
        } => match config::load(Some(&file)) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    out::outln!("warning: {w}");
                }
                out::outln!("ok {} ({} rules)", file.display(), loaded.allowlist.len());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("secureops: {e:#}");
            ExitCode::from(2)
        }
    }
}
