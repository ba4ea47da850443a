//! Measurements as JSON lines (one per measurement) and as a table for
//! people, every figure next to its ratio to the direct path.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::load::{Latency, Run};
use crate::procstat::Usage;

/// One measurement: one case against one target.
#[derive(Debug, Clone)]
pub struct Row {
    /// `tunnel_setup`, `bulk_1`, `http_get`, ...
    pub case: &'static str,
    /// `direct`, `secureops`, `tinyproxy`, `squid`, ...
    pub target: String,
    /// Whether a failed check here fails the benchmark.
    pub strict: bool,
    /// Concurrent clients (streams for bulk).
    pub clients: usize,
    /// Wall time of the measurement, seconds.
    pub duration_s: f64,
    /// Successful operations.
    pub ok: u64,
    /// Failed operations.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// The headline rate and its unit, e.g. (`conns_per_s`, 1234.5).
    pub rate: Option<(&'static str, f64)>,
    /// Latency percentiles of the successful operations.
    pub lat: Option<Latency>,
    /// Payload bytes moved.
    pub bytes: Option<u64>,
    /// Bytes that did not arrive (half-close, bulk).
    pub lost_bytes: Option<u64>,
    /// Resident memory figure of its own (idle tunnels), kB.
    pub rss_kb: Option<u64>,
    /// Proxy cost during the run.
    pub usage: Usage,
    /// Case-specific fields.
    pub extra: Map<String, Value>,
    /// Correctness failures (empty: every check passed).
    pub check: Vec<String>,
    /// Rate of this row / rate of the base row of the case.
    pub rate_ratio: Option<f64>,
    /// p99 of this row / p99 of the base row.
    pub p99_ratio: Option<f64>,
    /// Resident memory / the base row's (idle tunnels).
    pub rss_ratio: Option<f64>,
    /// The row the ratios are relative to.
    pub base: Option<String>,
}

impl Row {
    /// A row from a closed-loop run; `rate_key` names the rate
    /// (`conns_per_s`, `requests_per_s`, ...).
    pub fn from_run(
        case: &'static str,
        target: &crate::client::Target,
        clients: usize,
        mut run: Run,
        usage: Usage,
        rate_key: &'static str,
    ) -> Self {
        let rate = run.rate();
        let mut row = Self {
            case,
            target: target.name.clone(),
            strict: target.strict,
            clients,
            duration_s: run.elapsed.as_secs_f64(),
            ok: run.tally.ok,
            errors: run.tally.errors,
            first_error: run.tally.first_error.take(),
            rate: Some((rate_key, rate)),
            lat: Latency::of(&mut run.tally.lat_us),
            bytes: Some(run.tally.bytes),
            lost_bytes: None,
            rss_kb: None,
            usage,
            extra: Map::new(),
            check: Vec::new(),
            rate_ratio: None,
            p99_ratio: None,
            rss_ratio: None,
            base: None,
        };
        if run.tally.reconnects > 0 {
            row.extra.insert("reconnects".into(), json!(run.tally.reconnects));
        }
        if row.errors > 0 {
            row.check.push(format!(
                "{} of {} failed: {}",
                row.errors,
                row.ok + row.errors,
                row.first_error.as_deref().unwrap_or("?")
            ));
        }
        if row.ok == 0 {
            row.check.push("no successful operation".into());
        }
        row
    }

    /// The JSON line: `case` and `target` first, then the figures, then
    /// the check (key order kept as written, for people reading it).
    pub fn json_line(&self) -> String {
        let fields = self.fields();
        let mut out = String::from("{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::from(k.as_str()).to_string());
            out.push(':');
            out.push_str(&v.to_string());
        }
        out.push('}');
        out
    }

    fn fields(&self) -> Vec<(String, Value)> {
        let mut m = Fields::default();
        m.insert("case".into(), json!(self.case));
        m.insert("target".into(), json!(self.target));
        m.insert("clients".into(), json!(self.clients));
        m.insert("duration_s".into(), json!(round(self.duration_s, 3)));
        m.insert("ok".into(), json!(self.ok));
        m.insert("errors".into(), json!(self.errors));
        if let Some((key, rate)) = self.rate {
            m.insert(key.into(), json!(round(rate, 1)));
        }
        if let Some(l) = self.lat {
            m.insert("p50_us".into(), json!(l.p50));
            m.insert("p90_us".into(), json!(l.p90));
            m.insert("p99_us".into(), json!(l.p99));
            m.insert("max_us".into(), json!(l.max));
        }
        if let Some(b) = self.bytes {
            m.insert("bytes".into(), json!(b));
        }
        if let Some(b) = self.lost_bytes {
            m.insert("lost_bytes".into(), json!(b));
        }
        if let Some(kb) = self.rss_kb {
            m.insert("rss_kb".into(), json!(kb));
        }
        m.insert("proxy_peak_rss_kb".into(), json!(self.usage.peak_rss_kb));
        m.insert("proxy_cpu_s".into(), json!(self.usage.cpu_s.map(|c| round(c, 2))));
        m.insert("client_cpu_s".into(), json!(round(self.usage.client_cpu_s, 2)));
        if let Some(base) = &self.base {
            let key = |what: &str| format!("{what}_vs_{base}");
            if let Some(r) = self.rate_ratio {
                m.insert(key("rate"), json!(round(r, 3)));
            }
            if let Some(r) = self.p99_ratio {
                m.insert(key("p99"), json!(round(r, 3)));
            }
            if let Some(r) = self.rss_ratio {
                m.insert(key("rss"), json!(round(r, 3)));
            }
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        m.insert(
            "check".into(),
            if self.check.is_empty() {
                json!("ok")
            } else {
                json!(self.check)
            },
        );
        if let Some(e) = &self.first_error {
            m.insert("first_error".into(), json!(e));
        }
        m.0
    }
}

/// Ordered JSON fields (a later insert of the same key replaces it).
#[derive(Debug, Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn insert(&mut self, key: String, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Fills in the ratios of `rows` (one case) relative to the row of
/// `base` (normally `direct`). The idle-tunnel case compares memory only
/// (how fast the tunnels were opened is not what it is about).
pub fn ratios(rows: &mut [Row], base: &str) {
    let Some(b) = rows.iter().find(|r| r.target == base).cloned() else {
        return;
    };
    for r in rows.iter_mut() {
        if r.target == base {
            continue;
        }
        r.base = Some(base.to_owned());
        let memory_only = r.case == "idle_tunnels";
        if let (Some((_, x)), Some((_, y))) = (r.rate, b.rate)
            && !memory_only
            && y > 0.0
        {
            r.rate_ratio = Some(x / y);
        }
        if let (Some(x), Some(y)) = (r.lat, b.lat)
            && y.p99 > 0
            && !memory_only
        {
            r.p99_ratio = Some(f64::from(x.p99) / f64::from(y.p99));
        }
        if let (Some(x), Some(y)) = (r.rss_kb, b.rss_kb)
            && y > 0
        {
            r.rss_ratio = Some(x as f64 / y as f64);
        }
    }
}

fn rate_text(key: &str, rate: f64) -> String {
    let unit = match key {
        "mb_per_s" => "MB/s",
        "conns_per_s" => "conn/s",
        "requests_per_s" => "req/s",
        "refusals_per_s" => "refusal/s",
        "queries_per_s" => "query/s",
        "exchanges_per_s" => "exch/s",
        "tunnels_per_s" => "tunnel/s",
        _ => key,
    };
    if rate >= 100.0 {
        format!("{rate:.0} {unit}")
    } else {
        format!("{rate:.1} {unit}")
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or_else(|| "".into(), |r| format!("{r:.2}×"))
}

/// The Markdown table of all rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| case | target | rate | rate vs direct | p50 µs | p99 µs | max µs | p99 vs direct | proxy peak RSS MiB | proxy CPU s | check |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        let (rate, rate_ratio) = match (r.case, r.rate, r.rss_kb) {
            ("idle_tunnels", _, Some(kb)) => (
                format!("{} open, RSS {:.1} MiB", r.ok, kb as f64 / 1024.0),
                r.rss_ratio.map_or_else(String::new, |x| {
                    format!("{x:.2}× RSS of {}", r.base.as_deref().unwrap_or("?"))
                }),
            ),
            ("idle_tunnels", _, None) => (format!("{} open", r.ok), "(no proxy)".into()),
            (_, Some((k, v)), _) => (rate_text(k, v), ratio_text(r.rate_ratio)),
            (_, None, _) => (String::new(), String::new()),
        };
        let rate = match r.extra.get("rate_vs_null_audit").and_then(serde_json::Value::as_f64) {
            Some(x) if r.target != "secureops-null-audit" => format!("{rate} ({x:.2}× null audit)"),
            _ => rate,
        };
        let rate = match r.extra.get("rate_vs_metrics_off").and_then(serde_json::Value::as_f64) {
            Some(x) => format!("{rate} ({x:.3}× metrics off)"),
            None => rate,
        };
        let lat = |f: fn(&Latency) -> u32| r.lat.map_or_else(String::new, |l| f(&l).to_string());
        let check = if r.check.is_empty() {
            "ok".to_owned()
        } else {
            let mut c = r.check.join("; ");
            if c.len() > 90 {
                let mut cut = 90;
                while !c.is_char_boundary(cut) {
                    cut -= 1;
                }
                c.truncate(cut);
                c.push('…');
            }
            format!("**FAIL** {}", c.replace('|', "/"))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.case,
            r.target,
            rate,
            rate_ratio,
            lat(|l| l.p50),
            lat(|l| l.p99),
            lat(|l| l.max),
            ratio_text(r.p99_ratio),
            r.usage
                .peak_rss_kb
                .map_or_else(String::new, |kb| format!("{:.1}", kb as f64 / 1024.0)),
            r.usage.cpu_s.map_or_else(String::new, |c| format!("{c:.2}")),
            check,
        );
    }
    out
}
