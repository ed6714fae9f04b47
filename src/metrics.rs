//! `/metrics`: renders the latest published snapshot at scrape time. Rendering a snapshot (rather
//! than updating long-lived gauges) means an address that left the probed set has no series at the
//! next scrape, no scrape ever sees a half-cleared family, and a scrape never takes the probes' lock.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::CheckKind;
use crate::core::audit::{AddressReport, TargetReport};
use crate::core::finding::Finding;
use crate::core::outcome::{InfoSeries, ProbeState};
use crate::core::source::{SourceReport, unix_seconds};
use crate::core::state::Snapshot;
use crate::prefix::prefix_label;

/// The collector that renders the latest snapshot on every scrape.
#[derive(Debug)]
struct SnapshotCollector {
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl Collector for SnapshotCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Clone the Arc out and release the channel at once: publishing never waits on a scrape.
        let snapshot = Arc::clone(&self.snapshots.borrow());
        encode(&snapshot, encoder)
    }
}

/// A registry whose collector renders the snapshots `snapshots` receives.
pub fn registry(snapshots: watch::Receiver<Arc<Snapshot>>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector { snapshots }));
    registry
}

/// Renders `registry` in the `OpenMetrics` text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(64 * 1024);
    // Writing to a String cannot fail, and our collector returns only the writer's errors.
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encoding to a String");
    out
}

/// Converts `OpenMetrics` text to the Prometheus text format 0.0.4, for scrapers that do not ask
/// for `OpenMetrics` (curl, `promtool check metrics`): counter families are named with their
/// `_total` suffix there, and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge with no labels, or no sample at all when `value` is `None`.
fn single(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<f64>) -> Result<(), fmt::Error> {
    let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match value {
        Some(value) => ConstGauge::new(value).encode(family),
        None => Ok(()),
    }
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

/// The samples of one info family: labels and value.
type InfoRows = Vec<(Vec<(&'static str, String)>, f64)>;

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn encode(snapshot: &Snapshot, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
    let (report, status) = (&snapshot.report, &snapshot.status);
    let addresses: Vec<_> = report.targets.iter().flat_map(|t| &t.addresses).collect();
    let tip = |a: &AddressReport| {
        [
            ("target", a.target.clone()),
            ("ip", a.ip.to_string()),
            ("port", a.port.to_string()),
        ]
    };
    let probed = || addresses.iter().filter_map(|a| a.probe.as_ref().map(|p| (*a, p)));

    gauge(
        &mut e,
        "whitelist_audit_ip_up",
        "1 if the last probe of the address ended open, else 0; absent when this host failed to probe it (state error).",
        probed()
            .filter(|(_, p)| p.state.is_verdict())
            .map(|(a, p)| (tip(a), flag(p.state == ProbeState::Open))),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_ip_state",
        "State of the last probe: one series per state, exactly one is 1.",
        probed().flat_map(|(a, p)| {
            ProbeState::ALL.into_iter().map(move |s| {
                let [t, i, port] = tip(a);
                ([t, i, port, ("state", s.as_label().to_string())], flag(p.state == s))
            })
        }),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_ip_probe_duration_seconds",
        "Duration of the last probe's final attempt.",
        probed().map(|(a, p)| (tip(a), p.duration.as_secs_f64())),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_ip_probe_attempts",
        "Attempts the last probe used.",
        probed().map(|(a, p)| (tip(a), f64::from(p.attempts))),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_ip_last_probe_timestamp_seconds",
        "When the last probe of the address finished.",
        probed().map(|(a, p)| (tip(a), unix_seconds(p.finished_at))),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_ip_published",
        "1 if the address is in the target's published set, else 0.",
        addresses.iter().map(|a| {
            (
                [("target", a.target.clone()), ("ip", a.ip.to_string())],
                flag(a.published),
            )
        }),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_ip_whitelisted",
        "1 if the declared whitelist covers the address and port, else 0.",
        addresses
            .iter()
            .filter_map(|a| a.whitelisted.map(|w| (tip(a), flag(w)))),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_ip_finding",
        "1 for the address's finding; absent when it has none.",
        addresses.iter().filter_map(|a| {
            a.finding.map(|f: Finding| {
                let [t, i, port] = tip(a);
                ([t, i, port, ("finding", f.as_label().to_string())], 1.0)
            })
        }),
    )?;
    // Info series of each kind's evidence (`whitelist_audit_ssh_info`), one family per name.
    let mut infos: BTreeMap<&str, (&str, InfoRows)> = CheckKind::ALL
        .iter()
        .filter_map(|row| row.info_family)
        .map(|(family, help)| (family, (help, Vec::new())))
        .collect();
    for (a, p) in probed().filter(|(_, p)| p.state == ProbeState::Open) {
        if let Some(InfoSeries { family, help, labels }) = p.evidence.as_ref().and_then(|e| e.info()) {
            let [t, i, port] = tip(a);
            let mut all = vec![t, i, port];
            all.extend(labels);
            infos.entry(family).or_insert((help, Vec::new())).1.push((all, 1.0));
        }
    }
    for (family, (help, rows)) in infos {
        gauge(&mut e, family, help, rows)?;
    }
    gauge(
        &mut e,
        "whitelist_audit_whitelist_entry_unused",
        "1 if the whitelist entry covers no published address of any target on this port, else 0.",
        report.whitelist_entries.iter().map(|u| {
            (
                [("entry", u.entry.clone()), ("port", u.port.to_string())],
                flag(u.unused),
            )
        }),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_target_addresses",
        "Addresses of the target, by set (error: published addresses this host failed to probe).",
        report.targets.iter().flat_map(|t| {
            t.counts
                .by_set()
                .into_iter()
                .map(|(set, n)| ([("target", t.target.clone()), ("set", set.to_string())], n as f64))
        }),
    )?;
    let sources = || {
        report
            .targets
            .iter()
            .flat_map(|t| t.sources.iter().map(move |s| (t, s)))
    };
    let source_labels = |t: &TargetReport, s: &SourceReport| {
        let mut labels = vec![
            ("target", t.target.clone()),
            ("source", s.source.as_label().to_string()),
        ];
        if let Some(url) = &s.url {
            labels.push(("url", url.clone()));
        }
        labels
    };
    gauge(
        &mut e,
        "whitelist_audit_source_up",
        "1 if the source's last refresh succeeded, else 0.",
        sources().filter_map(|(t, s)| s.up.map(|up| (source_labels(t, s), flag(up)))),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_source_addresses",
        "Addresses the source holds now (a published prefix too large to probe counts as one).",
        sources().map(|(t, s)| (source_labels(t, s), s.addresses as f64)),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_source_last_success_timestamp_seconds",
        "When the source last refreshed successfully.",
        sources().filter_map(|(t, s)| s.last_success.map(|at| (source_labels(t, s), unix_seconds(at)))),
    )?;
    counter(
        &mut e,
        "whitelist_audit_source_refresh_failures",
        "Failed refreshes of the source since start, by reason.",
        sources().flat_map(|(t, s)| {
            s.failures.iter().map(move |(reason, n)| {
                let mut labels = source_labels(t, s);
                labels.push(("reason", reason.as_label().to_string()));
                (labels, *n)
            })
        }),
    )?;
    counter(
        &mut e,
        "whitelist_audit_published_changes",
        "Addresses (and prefixes too large to probe) added to and removed from the published set since start.",
        report.targets.iter().flat_map(|t| {
            [("added", t.changes.0), ("removed", t.changes.1)]
                .map(|(change, n)| ([("target", t.target.clone()), ("change", change.to_string())], n))
        }),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_prefix_unprobed",
        "1 for a published prefix too large to expand into addresses: audited, not probed.",
        report.targets.iter().flat_map(|t| {
            t.prefixes
                .iter()
                .filter(|p| !p.probed)
                .map(|p| ([("target", t.target.clone()), ("prefix", p.prefix.to_string())], 1.0))
        }),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_prefix_uncovered",
        "1 for each part of a published prefix that no whitelist entry covers on the target's port.",
        report.targets.iter().flat_map(|t| {
            t.prefixes.iter().flat_map(move |p| {
                p.uncovered.iter().map(move |part| {
                    (
                        [
                            ("target", t.target.clone()),
                            ("prefix", prefix_label(&p.prefix)),
                            ("uncovered", prefix_label(part)),
                            ("port", t.port.to_string()),
                        ],
                        1.0,
                    )
                })
            })
        }),
    )?;
    counter(
        &mut e,
        "whitelist_audit_probe_errors",
        "Probes this host failed to make (no file descriptor, no ephemeral port, ...) since start, by reason: not network verdicts.",
        report.targets.iter().flat_map(|t| {
            t.probe_errors.iter().map(|(fault, n)| {
                (
                    [("target", t.target.clone()), ("reason", fault.as_label().to_string())],
                    *n,
                )
            })
        }),
    )?;
    single(
        &mut e,
        "whitelist_audit_last_sweep_timestamp_seconds",
        "When the last complete sweep of every address finished.",
        status.sweep.last_finished.map(unix_seconds),
    )?;
    single(
        &mut e,
        "whitelist_audit_sweep_duration_seconds",
        "How long the last complete sweep took.",
        status.sweep.last_duration.map(|d| d.as_secs_f64()),
    )?;
    single(
        &mut e,
        "whitelist_audit_config_last_reload_successful",
        "1 if the last configuration reload succeeded, else 0.",
        Some(flag(status.reload_ok)),
    )?;
    gauge(
        &mut e,
        "whitelist_audit_build_info",
        "1; the version of whitelist-audit.",
        [([("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

    #[test]
    fn counters_get_their_total_name_in_the_text_format() {
        let openmetrics = "# HELP a_changes Changes.\n# TYPE a_changes counter\na_changes_total{x=\"1\"} 3\n\
                           # HELP a_up Up.\n# TYPE a_up gauge\na_up 1.0\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP a_changes_total Changes.\n# TYPE a_changes_total counter\na_changes_total{x=\"1\"} 3\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up 1.0\n"
        );
    }
}
