//! Operational logs through `tracing`, on stderr: human-readable by
//! default, one JSON object a line with `--log-format json` (`proxy` and
//! `run`). The level comes from `SECUREOPS_LOG`, else `RUST_LOG` (both in
//! `EnvFilter` syntax: `debug`, `secureops_proxy=trace,info`), else `info`
//! for `proxy` (a daemon reports its start, listeners and shutdown) and
//! `warn` for everything else (`run` shares the terminal with CMD).
//!
//! Decisions are not logged one by one at these levels: that is the audit
//! log's job.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

use crate::cli::Command;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `message`, `target`
    /// and the event's fields, all at the top level.
    Json,
}

/// The variables read for the level, in order of preference.
const LEVEL_VARIABLES: [&str; 2] = ["SECUREOPS_LOG", "RUST_LOG"];

/// The format and default level for `command`.
fn choice(command: &Command) -> (LogFormat, &'static str) {
    match command {
        Command::Proxy { log_format, .. } => (*log_format, "info"),
        Command::Run { log_format, .. } => (*log_format, "warn"),
        _ => (LogFormat::Text, "warn"),
    }
}

/// Installs the subscriber for `command` (once, before any thread starts).
pub fn init(command: &Command) {
    let (format, default_level) = choice(command);
    let mut bad = None;
    let filter = LEVEL_VARIABLES
        .iter()
        .find_map(|var| {
            let spec = std::env::var(var).ok().filter(|s| !s.trim().is_empty())?;
            match EnvFilter::try_new(&spec) {
                Ok(filter) => Some(filter),
                Err(e) => {
                    bad = Some(format!(
                        "{var}={spec:?} is not a log filter ({e}); using {default_level:?}"
                    ));
                    None
                }
            }
        })
        .unwrap_or_else(|| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // Flattened: `message` and the fields at the top level, as log
        // pipelines (Loki, Elasticsearch, Vector) expect them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    if let Some(why) = bad {
        tracing::warn!("{why}");
    }
}
