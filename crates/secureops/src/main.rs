//! `secureops`: the binary that wires the policy, the enforcement point and
//! the audit log together. Each subcommand lives in its own module.
#![forbid(unsafe_code)]
// Every line to stdout goes through `out` (`outln!`), which ends the
// process quietly when the reader goes away (`… | head -1`); `println!`
// would panic there.
#![warn(clippy::print_stdout)]

mod audit_cmd;
mod audit_summary;
mod audit_tail;
mod authoring;
mod check;
mod cli;
mod confine;
mod docs_cmd;
mod escalate_cmd;
mod fault_hook;
mod logging;
mod metrics;
mod ocsf;
mod out;
mod presets_cmd;
mod probe;
mod run;
mod serve;
mod suggest_cmd;
mod summary;

use std::process::ExitCode;

use clap::Parser;
// The config loader is the library half of this package (src/lib.rs), so
// the fuzz targets can reach it; `crate::config` still names it here.
use secureops::config;

use crate::cli::{Cli, Command, ConfigCommand, PolicyCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::NsChild { control, cmd } = &cli.command {
        // Before anything else: this process must stay single-threaded.
        return confine::child_main(control, cmd);
    }
    logging::init(&cli.command);
    let result = match cli.command {
        Command::Proxy { config, .. } => serve::proxy(config.as_deref()),
        Command::Run {
            config,
            allow,
            audit,
            weak,
            user,
            learn,
            quiet,
            cmd,
            ..
        } => run::run(
            config.as_deref(),
            &allow,
            audit.as_deref(),
            weak,
            user.as_deref(),
            &cmd,
            authoring::Options { learn, quiet },
        ),
        Command::Check {
            config,
            pid,
            allow,
            dest,
        } => return check::check(config.as_deref(), pid, &allow, &dest),
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
        Command::Presets { name } => return presets_cmd::presets_cmd(name.as_deref()),
        Command::Policy {
            action: PolicyCommand::Suggest { logs, config },
        } => return suggest_cmd::suggest_cmd(&logs, config.as_deref()),
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
        Command::Completions { shell } => docs_cmd::completions(shell),
        Command::Man => docs_cmd::man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("secureops: {e:#}");
            ExitCode::from(2)
        }
    }
}
