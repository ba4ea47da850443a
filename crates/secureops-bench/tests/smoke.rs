//! CI smoke run of the load benchmark (`secureops-bench --smoke`): every
//! case, a fraction of a second each, 4 clients, against the direct path
//! and the real `secureops` binary. Correctness only, never speed: every
//! allowed exchange echoed, every denied one refused with 403, every byte
//! of bulk and half-close counted, every DNS answer as expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The `secureops` binary: `SECUREOPS_BIN`, else the one beside this
/// package's binary in the same target folder (`cargo test --workspace`
/// builds every package's binaries before it runs any test).
fn secureops_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SECUREOPS_BIN") {
        return Ok(p.into());
    }
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_secureops-bench"));
    let candidate = bench.parent().map(|d| d.join("secureops")).ok_or("no target folder")?;
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(format!(
            "{} is not built (`cargo test --workspace` builds it; or `cargo build -p secureops`, or set SECUREOPS_BIN)",
            candidate.display()
        ))
    }
}

const CASES: [&str; 21] = [
    "tunnel_setup",
    "denied_connect",
    "http_get",
    "bulk_1",
    "bulk_8",
    "bulk_down_1",
    "bulk_down_8",
    "half_close",
    "flood_off",
    "flood_on",
    "audit_tunnel_setup",
    "dns_denied",
    "dns_static",
    "dns_cached",
    "idle_tunnels",
    // The audit case's other two secureops instances.
    "audit_tunnel_setup/secureops-fsync-always",
    "audit_tunnel_setup/secureops-tmpfs",
    // The metrics case: the guard without and with `[metrics]`.
    "metrics_tunnel_setup/secureops",
    "metrics_tunnel_setup/secureops-metrics",
    "metrics_dns_static/secureops",
    "metrics_dns_static/secureops-metrics",
];

#[test]
fn smoke_run_checks_every_exchange() {
    let bin = match secureops_bin() {
        Ok(bin) => bin,
        Err(why) => {
            eprintln!("SKIP smoke_run_checks_every_exchange: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("smoke.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_secureops-bench"))
        .arg("--smoke")
        .arg("--secureops")
        .arg(&bin)
        .arg("--json")
        .arg(&json)
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "secureops-bench --smoke failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json).unwrap();
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for row in &rows {
        let what = format!("{row}");
        assert_eq!(row["check"], "ok", "{what}");
        assert_eq!(row["errors"], 0, "{what}");
        assert!(row["ok"].as_u64().unwrap() > 0, "{what}");
        if let Some(lost) = row.get("lost_bytes") {
            assert_eq!(lost, 0, "{what}");
        }
        assert!(
            [
                "direct",
                "secureops",
                "secureops-fsync-always",
                "secureops-tmpfs",
                "secureops-metrics"
            ]
            .contains(&row["target"].as_str().unwrap()),
            "{what}"
        );
    }
    let has = |case: &str, target: &str| rows.iter().any(|r| r["case"] == case && r["target"] == target);
    for case in CASES {
        match case.split_once('/') {
            Some((case, target)) => {
                // No tmpfs on this machine: that variant is left out.
                if target.ends_with("tmpfs") && !stdout.contains("secureops-tmpfs") {
                    continue;
                }
                assert!(has(case, target), "{case} / {target} missing:\n{text}");
            }
            None => {
                assert!(has(case, "direct"), "{case} / direct missing:\n{text}");
                assert!(has(case, "secureops"), "{case} / secureops missing:\n{text}");
            }
        }
    }
    // Every denied attempt was answered 403 (any other answer is an error).
    let denied = rows
        .iter()
        .find(|r| r["case"] == "denied_connect" && r["target"] == "secureops")
        .unwrap();
    assert!(denied["refusals_per_s"].as_f64().unwrap() > 0.0, "{denied}");
    // Half-closed clients got every byte.
    let half = rows
        .iter()
        .find(|r| r["case"] == "half_close" && r["target"] == "secureops")
        .unwrap();
    assert_eq!(
        half["bytes"].as_u64().unwrap(),
        half["ok"].as_u64().unwrap() * half["bytes_per_exchange"].as_u64().unwrap(),
        "{half}"
    );
    assert!(stdout.contains("| tunnel_setup | secureops |"), "table:\n{stdout}");
}
