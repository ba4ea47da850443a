//! `[metrics] listen`: the guard's counters as Prometheus text (format
//! 0.0.4) at `/metrics`, off when the section is absent.
//!
//! The libraries keep plain atomics ([`ProxyStats`] in secureops-proxy,
//! [`AuditStats`] in secureops-audit); this module reads them at scrape
//! time through one prometheus-client [`Collector`], together with the
//! escalations held and the process's own figures (`process_*`). So the
//! hot path never touches prometheus-client, and a scrape costs one pass
//! over a few dozen atomics and `/proc/self`.
//!
//! Every label comes from a closed set (decision, kind, via, refusal
//! class, DNS answer class, direction): a destination never becomes a
//! label, whatever the traffic.

mod http;
mod process;

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use secureops_audit::AuditStats;
use secureops_audit::stats::HistogramSnapshot;
use secureops_proxy::{Escalations, ProxyStats};

pub(crate) use http::Server;

/// What one guard exposes.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    /// The proxy's and sinkhole's counters.
    pub proxy: Arc<ProxyStats>,
    /// The audit log's.
    pub audit: Arc<AuditStats>,
    /// The escalation broker, when the policy can escalate.
    pub escalations: Option<Arc<Escalations>>,
}

/// The registry of one guard: everything is read from `sources` at scrape.
pub(crate) fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Guard(sources)));
    registry.register_collector(Box::new(process::Process));
    registry
}

/// Encodes `registry` in the Prometheus text format.
pub(crate) fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Guard(Sources);

/// Writes one metric with one series per label set.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        let one = metric.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(value.max(0) as u64).encode(one)?,
            _ => ConstGauge::new(value).encode(one)?,
        }
    }
    Ok(())
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Guard {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Sources {
            proxy,
            audit,
            escalations,
        } = &self.0;
        family(
            &mut encoder,
            "secureops_decisions",
            "Decisions taken, one per audit entry of kind egress or dns (via=none: refused before a host was read).",
            MetricType::Counter,
            proxy.decisions().into_iter().map(|d| {
                (
                    [("kind", d.kind), ("decision", d.decision), ("via", d.via)],
                    as_i64(d.count),
                )
            }),
        )?;
        family(
            &mut encoder,
            "secureops_refusals",
            "Connections and requests refused by the proxy, by reason class (overloaded also counts those shed unanswered).",
            MetricType::Counter,
            proxy
                .refusals()
                .into_iter()
                .map(|(class, n)| ([("reason", class.as_str())], as_i64(n))),
        )?;
        gauge(
            &mut encoder,
            "secureops_tunnels_active",
            "Tunnels relaying now (CONNECT tunnels and redirected TCP connections).",
            proxy.tunnels_active(),
        )?;
        family(
            &mut encoder,
            "secureops_relayed_bytes",
            "Bytes relayed through tunnels: up = client to destination, down = destination to client.",
            MetricType::Counter,
            proxy
                .relayed_bytes()
                .into_iter()
                .map(|(d, n)| ([("direction", d.as_str())], as_i64(n))),
        )?;
        family(
            &mut encoder,
            "secureops_dns_queries",
            "DNS messages handled by the sinkhole, by what was answered.",
            MetricType::Counter,
            proxy
                .dns_answers()
                .into_iter()
                .map(|(a, n)| ([("answer", a.as_str())], as_i64(n))),
        )?;
        histogram(
            &mut encoder,
            "secureops_pdp_seconds",
            "Time the policy decision point took per decision.",
            &proxy.pdp_seconds(),
        )?;
        counter(
            &mut encoder,
            "secureops_audit_entries",
            "Lines written to the audit log (decisions and its own start/stop entries).",
            audit.entries(),
        )?;
        histogram(
            &mut encoder,
            "secureops_audit_group_entries",
            "Lines per group commit of the audit log (one write, one signature with sign=batch).",
            &audit.groups(),
        )?;
        histogram(
            &mut encoder,
            "secureops_audit_sync_seconds",
            "Duration of each data sync (fdatasync) of the audit log.",
            &audit.syncs(),
        )?;
        gauge(
            &mut encoder,
            "secureops_escalations_pending",
            "Requests held for a person to approve or deny.",
            escalations
                .as_ref()
                .map_or(0, |e| i64::try_from(e.pending_count()).unwrap_or(i64::MAX)),
        )?;
        Ok(())
    }
}

/// The counters of a guard started with this config: `Some` only with
/// `[metrics]` (without it nothing is counted).
pub(crate) fn stats_for(loaded: &crate::config::Loaded) -> Option<Arc<ProxyStats>> {
    loaded.raw.metrics.as_ref().map(|_| Arc::default())
}

/// Starts `/metrics` for a guard when `[metrics]` is set.
pub(crate) async fn start(
    loaded: &crate::config::Loaded,
    stats: Option<Arc<ProxyStats>>,
    audit: &secureops_audit::AuditLog,
    escalations: Option<Arc<Escalations>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<Server>> {
    let (Some(section), Some(proxy)) = (&loaded.raw.metrics, stats) else {
        return Ok(None);
    };
    let sources = Sources {
        proxy,
        audit: audit.stats(),
        escalations,
    };
    let server = Server::start(section.listen, sources, shutdown).await?;
    tracing::info!(addr = %server.addr, "metrics listening at /metrics");
    Ok(Some(server))
}
