//! The standard `process_*` metrics of Prometheus client libraries (CPU
//! seconds, resident and virtual memory, open and maximum descriptors,
//! threads, start time), read from `/proc/self` at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self` on each scrape; a figure that cannot be read is left
/// out rather than reported as zero.
#[derive(Debug)]
pub(super) struct Process;

/// The fields of `/proc/self/stat` used here.
struct Stat {
    /// utime + stime, clock ticks.
    cpu_ticks: u64,
    threads: u64,
    /// Ticks after boot.
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

fn stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name "(...)", which may hold spaces: the
    // state is field 3, so field N is at index N - 3.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: n(14)? + n(15)?,
        threads: n(20)?,
        start_ticks: n(22)?,
        vsize_bytes: n(23)?,
        rss_pages: n(24)?,
    })
}

/// Boot time, seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as f64;
        if let Some(s) = stat() {
            let cpu = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(s.cpu_ticks as f64 / ticks).encode(cpu)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.rss_pages as f64 * page,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.vsize_bytes as f64,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process.",
                s.threads as f64,
            )?;
            if let Some(boot) = boot_time() {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + s.start_ticks as f64 / ticks,
                )?;
            }
        }
        if let Some(n) = open_fds() {
            // The read_dir handle itself was open while counting.
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                n.saturating_sub(1) as f64,
            )?;
        }
        if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max as f64,
            )?;
        }
        Ok(())
    }
}
