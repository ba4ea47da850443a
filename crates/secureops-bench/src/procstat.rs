//! What a proxy process costs during a measurement: peak resident memory
//! and CPU seconds, read from `/proc` (the process and its descendants).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often resident memory is sampled during a measurement.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

/// Raises this process's open-file limit (inherited by the proxies it
/// starts) towards `want`: to `want` when allowed (root), else to the hard
/// limit. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let both = rustix::process::Rlimit {
        current: Some(want),
        maximum: Some(want.max(hard)),
    };
    if setrlimit(Resource::Nofile, both).is_ok() {
        return want;
    }
    let to_hard = rustix::process::Rlimit {
        current: Some(hard.min(want)),
        maximum: cur.maximum,
    };
    if setrlimit(Resource::Nofile, to_hard).is_ok() {
        return hard.min(want);
    }
    soft
}

/// `pid` and all its descendants (through `/proc/PID/task/*/children`).
fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 4096 {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    out
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resident memory of `pid` and its descendants, kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let mut total = None;
    for p in tree(pid) {
        if let Some(kb) = status_kb(p, "VmRSS") {
            total = Some(total.unwrap_or(0) + kb);
        }
    }
    total
}

/// CPU clock ticks (user + system, own + reaped children) of one process.
fn ticks(stat_path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name "(...)": state is field 3, so field N
    // is at index N - 3; utime 14, stime 15, cutime 16, cstime 17.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(get(14)? + get(15)? + get(16)? + get(17)?)
}

fn tick_secs() -> f64 {
    let hz = rustix::param::clock_ticks_per_second();
    if hz == 0 { 0.01 } else { 1.0 / hz as f64 }
}

/// CPU seconds used so far by `pid` and its descendants.
pub fn cpu_s(pid: u32) -> Option<f64> {
    let mut total = None;
    for p in tree(pid) {
        if let Some(t) = ticks(Path::new(&format!("/proc/{p}/stat"))) {
            total = Some(total.unwrap_or(0) + t);
        }
    }
    total.map(|t| t as f64 * tick_secs())
}

/// CPU seconds used so far by this process (the load generator and the
/// in-process upstreams).
pub fn self_cpu_s() -> f64 {
    ticks(Path::new("/proc/self/stat")).map_or(0.0, |t| t as f64 * tick_secs())
}

/// Cost of one measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Peak resident memory of the proxy during the run, kB.
    pub peak_rss_kb: Option<u64>,
    /// CPU seconds the proxy used during the run.
    pub cpu_s: Option<f64>,
    /// CPU seconds this benchmark process used during the run.
    pub client_cpu_s: f64,
}

/// Watches a proxy process while a measurement runs.
#[derive(Debug)]
pub struct Watch {
    pid: Option<u32>,
    /// Whether the kernel's peak mark was reset at the start (else VmHWM
    /// is the lifetime peak and only the samples count).
    hwm_reset: bool,
    cpu0: Option<f64>,
    self0: f64,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    sampler: Option<tokio::task::JoinHandle<()>>,
}

impl Watch {
    /// Starts watching `pid` (nothing to watch for the direct path).
    pub fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        // Resets the kernel's peak-RSS mark (VmHWM), Linux >= 4.0.
        let hwm_reset = pid.is_some_and(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok());
        let sampler = pid.map(|pid| {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kb) = rss_kb(pid) {
                        peak.fetch_max(kb, Ordering::Relaxed);
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
            })
        });
        Self {
            pid,
            hwm_reset,
            cpu0: pid.and_then(cpu_s),
            self0: self_cpu_s(),
            stop,
            peak,
            sampler,
        }
    }

    /// Stops watching and returns what the run cost.
    pub async fn finish(mut self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            let _ = s.await;
        }
        let client_cpu_s = self_cpu_s() - self.self0;
        let Some(pid) = self.pid else {
            return Usage {
                client_cpu_s,
                ..Usage::default()
            };
        };
        let mut peak = self.peak.load(Ordering::Relaxed);
        if self.hwm_reset
            && let Some(hwm) = status_kb(pid, "VmHWM")
        {
            peak = peak.max(hwm);
        }
        Usage {
            peak_rss_kb: (peak > 0).then_some(peak),
            cpu_s: match (self.cpu0, cpu_s(pid)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            client_cpu_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kb(me).unwrap() > 0);
        assert!(cpu_s(me).is_some());
        assert!(tree(me).contains(&me));
    }
}
