//! `/metrics`: renders the audit report at scrape time. Rendering the snapshot (rather than
//! updating long-lived gauges) means an address that left the probed set has no series at the next
//! scrape, and no scrape ever sees a half-cleared family.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::app::Shared;
use crate::audit::{Finding, Report};
use crate::discovery::unix_seconds;
use crate::probe::ProbeState;
use crate::state::SweepStatus;

/// The collector that renders the shared state on every scrape.
#[derive(Debug)]
struct AuditCollector {
    shared: Arc<Shared>,
}

impl Collector for AuditCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Build the report under the lock, encode it outside: probes never wait on a slow scrape.
        let (report, sweep) = self.shared.with_state(|state| (state.report(), state.sweep));
        encode(&report, sweep, self.shared.last_reload_successful(), encoder)
    }
}

/// A registry holding the audit collector.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AuditCollector { shared }));
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

#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
fn encode(report: &Report, sweep: SweepStatus, reload_ok: bool, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
    let addresses: Vec<_> = report.targets.iter().flat_map(|t| &t.addresses).collect();
    let tip = |a: &crate::audit::AddressReport| {
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
        "1 if the last probe of the address ended open, else 0.",
        probed().map(|(a, p)| (tip(a), flag(p.state == ProbeState::Open))),
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
    gauge(
        &mut e,
        "whitelist_audit_ssh_info",
        "1; software from the server's SSH identification line.",
        probed().filter_map(|(a, p)| {
            p.software.as_ref().filter(|_| p.state == ProbeState::Open).map(|s| {
                let [t, i, port] = tip(a);
                ([t, i, port, ("software", s.chars().take(64).collect::<String>())], 1.0)
            })
        }),
    )?;
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
        "Addresses of the target, by set.",
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
    let source_labels = |t: &crate::audit::TargetReport, s: &crate::discovery::SourceReport| {
        let mut labels = vec![("target", t.target.clone()), ("source", s.source.to_string())];
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
                labels.push(("reason", reason.clone()));
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
                            ("prefix", crate::whitelist::prefix_label(&p.prefix)),
                            ("uncovered", crate::whitelist::prefix_label(part)),
                            ("port", t.port.to_string()),
                        ],
                        1.0,
                    )
                })
            })
        }),
    )?;
    single(
        &mut e,
        "whitelist_audit_last_sweep_timestamp_seconds",
        "When the last complete sweep of every address finished.",
        sweep.last_finished.map(unix_seconds),
    )?;
    single(
        &mut e,
        "whitelist_audit_sweep_duration_seconds",
        "How long the last complete sweep took.",
        sweep.last_duration.map(|d| d.as_secs_f64()),
    )?;
    single(
        &mut e,
        "whitelist_audit_config_last_reload_successful",
        "1 if the last configuration reload succeeded, else 0.",
        Some(flag(reload_ok)),
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
