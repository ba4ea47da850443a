//! `secureops audit export FILE --format ocsf`: the log's decisions as OCSF
//! 1.8 events, one JSON object a line, for SIEMs. Egress entries become
//! Network Activity (4001), DNS entries DNS Activity (4003); the `start` and
//! `stop` markers are not exported, but what they say that a SIEM needs (the
//! signing key's fingerprint, the writer's version) rides on every event.
//! The field mapping is documented in `docs/ocsf.md`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use secureops_audit::{Entry, EntryKind, Verdict, Via};
use serde_json::{Map, Value, json};

use crate::cli::ExportFormat;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.8.0";
/// OCSF category "Network Activity".
const CATEGORY_UID: u32 = 4;
const NETWORK_ACTIVITY: u32 = 4001;
const DNS_ACTIVITY: u32 = 4003;

/// Writes `file`'s decisions to stdout; exit 1 (after the events before it)
/// at the first line that is not a log entry.
pub fn export(file: &Path, format: ExportFormat) -> anyhow::Result<ExitCode> {
    let ExportFormat::Ocsf = format;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let log_name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut writer = Writer::default();
    let mut out = std::io::BufWriter::new(crate::out::stdout());
    for (n, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read {}", file.display()))?;
        let event = match Entry::parse(&line) {
            Ok(entry) => writer.event(&entry, log_name.as_deref()),
            Err(fault) => Err(fault.to_string()),
        };
        match event {
            Ok(Some(event)) => {
                serde_json::to_writer(&mut out, &event)?;
                out.write_all(b"\n")?;
            }
            Ok(None) => {}
            Err(why) => {
                out.flush()?;
                eprintln!("secureops: {}:{}: cannot export: {why}", file.display(), n + 1);
                return Ok(ExitCode::from(1));
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What the `start` entries said, carried onto the events after them.
#[derive(Debug, Default)]
struct Writer {
    fingerprint: Option<String>,
    version: Option<String>,
}

impl Writer {
    /// The OCSF event for `entry`, `None` for start/stop (remembered).
    fn event(&mut self, entry: &Entry<'_>, log_name: Option<&str>) -> Result<Option<Value>, String> {
        let class_uid = match entry.kind {
            EntryKind::Start => {
                self.fingerprint = entry.fingerprint.as_deref().map(str::to_owned);
                // "secureops 0.1.0" → "0.1.0"
                let version = entry.version.as_deref().map(|v| v.rsplit(' ').next().unwrap_or(v));
                self.version = version.map(str::to_owned);
                return Ok(None);
            }
            EntryKind::Stop => return Ok(None),
            EntryKind::Egress => NETWORK_ACTIVITY,
            EntryKind::Dns => DNS_ACTIVITY,
        };
        let decision = entry.decision.ok_or("a decision entry without a decision")?;
        let time = entry
            .ts
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("bad timestamp {:?}: {e}", entry.ts))?
            .as_millisecond();
        let allowed = decision == Verdict::Allow;
        let (activity_id, activity) = match (class_uid, allowed) {
            (DNS_ACTIVITY, _) => (6, "Traffic"),
            (_, true) => (1, "Open"),
            (_, false) => (5, "Refuse"),
        };
        let (severity_id, severity) = if allowed { (1, "Informational") } else { (2, "Low") };
        let class_name = if class_uid == DNS_ACTIVITY {
            "DNS Activity"
        } else {
            "Network Activity"
        };
        let mut reason = entry.reason.to_string();
        if let Some(detail) = &entry.detail {
            reason.push_str(" (");
            reason.push_str(detail);
            reason.push(')');
        }
        let dest = match (entry.host.as_deref(), entry.port) {
            (Some(host), Some(port)) => format!(" {host}:{port}"),
            (Some(host), None) => format!(" {host}"),
            (None, _) => String::new(),
        };
        let mut event = json!({
            "activity_id": activity_id,
            "activity_name": activity,
            "category_uid": CATEGORY_UID,
            "category_name": "Network Activity",
            "class_uid": class_uid,
            "class_name": class_name,
            "type_uid": u64::from(class_uid) * 100 + activity_id,
            "type_name": format!("{class_name}: {activity}"),
            "severity_id": severity_id,
            "severity": severity,
            "time": time,
            "message": format!("{decision}{dest}: {}", entry.reason),
            "status_id": if allowed { 1 } else { 2 },
            "status": if allowed { "Success" } else { "Failure" },
            "status_detail": reason,
            "action_id": if allowed { 1 } else { 2 },
            "action": if allowed { "Allowed" } else { "Denied" },
            "disposition_id": if allowed { 1 } else { 2 },
            "disposition": if allowed { "Allowed" } else { "Blocked" },
            "metadata": self.metadata(entry, log_name),
            "unmapped": {
                "seq": entry.seq,
                "prev": entry.prev,
                "sig": entry.sig,
                "key_fingerprint": self.fingerprint,
                "decision": decision.as_str(),
                "via": entry.via.map(Via::as_str),
            },
        });
        let fields = event.as_object_mut().ok_or("not an object")?;
        if let Some(status) = entry.status {
            fields.insert("status_code".into(), status.to_string().into());
        }
        // Network classes need an endpoint. The log names the destination
        // of a connection but not the client, and for a DNS query the
        // server asked is the guard's own sinkhole.
        let guard = |service: &str| json!({ "svc_name": service });
        if class_uid == DNS_ACTIVITY {
            fields.insert("dst_endpoint".into(), guard("secureops dns"));
            if let Some(host) = entry.host.as_deref() {
                let mut query = Map::new();
                query.insert("hostname".into(), host.into());
                if let Some(qtype) = &entry.qtype {
                    query.insert("type".into(), qtype.as_ref().into());
                }
                fields.insert("query".into(), query.into());
            }
        } else {
            fields.insert(
                "connection_info".into(),
                json!({"direction_id": 2, "direction": "Outbound", "protocol_num": 6, "protocol_name": "tcp"}),
            );
            let endpoint = endpoint(entry.host.as_deref(), entry.port).unwrap_or_else(|| guard("secureops proxy"));
            fields.insert("dst_endpoint".into(), endpoint);
        }
        if let Some(actor) = actor(entry.pid, entry.exe.as_deref()) {
            fields.insert("actor".into(), actor);
        }
        Ok(Some(event))
    }

    fn metadata(&self, entry: &Entry<'_>, log_name: Option<&str>) -> Value {
        let mut product = json!({"name": "SecureOps", "vendor_name": "SecureOps"});
        if let (Some(version), Some(p)) = (&self.version, product.as_object_mut()) {
            p.insert("version".into(), version.as_str().into());
        }
        let mut metadata = json!({
            "version": OCSF_VERSION,
            "product": product,
            "profiles": ["host", "security_control"],
            "original_time": entry.ts,
            "sequence": entry.seq,
            "log_provider": "secureops",
        });
        if let (Some(name), Some(m)) = (log_name, metadata.as_object_mut()) {
            m.insert("log_name".into(), name.into());
        }
        metadata
    }
}

/// `dst_endpoint`: an IP literal as `ip`, a name as `hostname`.
fn endpoint(host: Option<&str>, port: Option<u16>) -> Option<Value> {
    let host = host?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let mut endpoint = Map::new();
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => endpoint.insert("ip".into(), ip.to_string().into()),
        Err(_) => endpoint.insert("hostname".into(), host.into()),
    };
    if let Some(port) = port {
        endpoint.insert("port".into(), port.into());
    }
    Some(endpoint.into())
}

/// `actor.process`: the attributed process, when the log knows its pid
/// (OCSF wants a pid or uid on every process).
fn actor(pid: Option<u32>, exe: Option<&str>) -> Option<Value> {
    let mut process = Map::new();
    process.insert("pid".into(), pid?.into());
    if let Some(exe) = exe {
        let name = exe.rsplit('/').next().unwrap_or(exe);
        process.insert("name".into(), name.into());
        process.insert(
            "file".into(),
            json!({"name": name, "path": exe, "type_id": 8, "type": "Executable File"}),
        );
    }
    Some(json!({ "process": process }))
}
