//! `/metrics`: renders the latest published snapshot at scrape time. Rendering a snapshot (rather
//! than updating long-lived gauges) means an address that left the probed set has no series at the
//! next scrape, no scrape ever sees a half-cleared family, and a scrape never takes the probes' lock.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::CheckKind;
use crate::core::audit::{AddressReport, Report, TargetReport};
use crate::core::outcome::{InfoSeries, LocalFault, ProbeState};
use crate::core::source::{SourceReport, unix_seconds};
use crate::core::ssh::{SshProblem, is_aead};
use crate::core::state::{DaemonStatus, Snapshot};
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

// ------------------------------------------------------------------ typed label sets

/// Writes one `key="value"` label.
fn label(encoder: &mut LabelSetEncoder, key: &str, value: &impl EncodeLabelValue) -> fmt::Result {
    let mut label = encoder.encode_label();
    let mut key_encoder = label.encode_label_key()?;
    key_encoder.write_str(key)?;
    let mut value_encoder = key_encoder.encode_label_value()?;
    value.encode(&mut value_encoder)?;
    value_encoder.finish()
}

/// A label set of borrowed values: the struct and its `EncodeLabelSet`, keys named after the fields
/// (prometheus-client's derive takes no lifetimes, and borrowing saves an allocation per label).
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        struct $name<'a> {
            $($field: $ty),*
        }

        impl EncodeLabelSet for $name<'_> {
            fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
                $(label(encoder, stringify!($field), &self.$field)?;)*
                Ok(())
            }
        }
    };
}

/// An address as a label value: canonical text, RFC 5952 for IPv6.
#[derive(Debug, Clone, Copy)]
struct Ip(IpAddr);

impl EncodeLabelValue for Ip {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        write!(encoder, "{}", self.0)
    }
}

/// A prefix as a label value: a bare address for /32 and /128.
#[derive(Debug, Clone, Copy)]
struct Prefix<'a>(&'a ipnet::IpNet);

impl EncodeLabelValue for Prefix<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        encoder.write_str(&prefix_label(self.0))
    }
}

label_set!(
    /// One probed address of one target.
    AddressLabels { target: &'a str, ip: Ip, port: u16 }
);
label_set!(
    /// An address of a target, whatever the port.
    PublishedLabels { target: &'a str, ip: Ip }
);
label_set!(
    /// One state series of an address.
    StateLabels { target: &'a str, ip: Ip, port: u16, state: &'static str }
);
label_set!(
    /// The finding series of an address.
    FindingLabels { target: &'a str, ip: Ip, port: u16, finding: &'static str }
);
label_set!(
    /// One whitelist entry on one port.
    EntryLabels { entry: &'a str, port: u16 }
);
label_set!(
    /// One count of a target's addresses.
    SetLabels { target: &'a str, set: &'static str }
);
label_set!(
    /// One reason of a target's local probe faults.
    FaultLabels { target: &'a str, reason: &'static str }
);
label_set!(
    /// One direction of change of a target's published set.
    ChangeLabels { target: &'a str, change: &'static str }
);
label_set!(
    /// A published prefix of a target.
    PrefixLabels { target: &'a str, prefix: Prefix<'a> }
);
label_set!(
    /// A part of a published prefix the whitelist lacks.
    UncoveredLabels { target: &'a str, prefix: Prefix<'a>, uncovered: Prefix<'a>, port: u16 }
);
label_set!(
    /// An address a source returned that is never a vendor's.
    BogusLabels { target: &'a str, ip: Ip, source: &'static str }
);
label_set!(
    /// One address family of a target's DNS source.
    FamilyLabels { target: &'a str, family: &'static str }
);
label_set!(
    /// What the server would pick with the target's first configured SSH client.
    KexLabels { target: &'a str, ip: Ip, port: u16, kex: &'a str, host_key: &'a str, cipher: &'a str, mac: &'a str }
);
label_set!(
    /// One configured SSH client against one address.
    ClientLabels { target: &'a str, ip: Ip, port: u16, client: &'a str }
);
label_set!(
    /// One state series of one session check of an address.
    SessionLabels { target: &'a str, ip: Ip, port: u16, check: &'static str, state: &'static str }
);
label_set!(
    /// The authentication methods a server offers the monitoring account.
    MethodsLabels { target: &'a str, ip: Ip, port: u16, methods: &'a str }
);
label_set!(
    /// The side an address's last change is attributed to.
    CauseLabels { target: &'a str, ip: Ip, port: u16, cause: &'static str }
);
label_set!(
    /// Who rejected one address, as raw diagnosis saw it.
    RejectedByLabels { target: &'a str, ip: Ip, port: u16, rejected_by: &'a str, kind: &'static str }
);
label_set!(
    /// The last hop that answered before one address's SYNs went silent.
    LastHopLabels { target: &'a str, ip: Ip, port: u16, hop: u8, hop_ip: Ip }
);
label_set!(
    /// One SSH problem of one address.
    SshProblemLabels { target: &'a str, ip: Ip, port: u16, problem: &'static str }
);
label_set!(
    /// A target's client odds within a number of attempts.
    AttemptsLabels { target: &'a str, attempts: u32 }
);
label_set!(
    /// A target, alone.
    TargetLabels { target: &'a str }
);
label_set!(
    /// The running version.
    BuildLabels { version: &'a str }
);

/// One source of a target; `url` only for published lists.
#[derive(Debug, Clone, Copy)]
struct SourceLabels<'a> {
    target: &'a str,
    source: &'a SourceReport,
    reason: Option<&'static str>,
}

impl EncodeLabelSet for SourceLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        label(encoder, "target", &self.target)?;
        label(encoder, "source", &self.source.source.as_label())?;
        if let Some(url) = &self.source.url {
            label(encoder, "url", url)?;
        }
        if let Some(reason) = self.reason {
            label(encoder, "reason", &reason)?;
        }
        Ok(())
    }
}

/// The address labels plus the labels of a kind's info series.
#[derive(Debug, Clone)]
struct InfoLabels<'a> {
    address: AddressLabels<'a>,
    extra: Vec<(&'static str, String)>,
}

impl EncodeLabelSet for InfoLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        self.address.encode(encoder)?;
        for (key, value) in &self.extra {
            label(encoder, key, value)?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ families

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

fn encode(snapshot: &Snapshot, mut e: DescriptorEncoder) -> Result<(), fmt::Error> {
    let report = &snapshot.report;
    encode_addresses(report, &mut e)?;
    encode_targets(report, &mut e)?;
    encode_sources(report, &mut e)?;
    encode_prefixes(report, &mut e)?;
    encode_daemon(snapshot.status, &mut e)
}

fn at(a: &AddressReport) -> AddressLabels<'_> {
    AddressLabels {
        target: &a.target,
        ip: Ip(a.ip),
        port: a.port,
    }
}

/// The cause of each address's last change, valued with when it was seen.
fn encode_change_causes(addresses: &[&AddressReport], e: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        e,
        "whitelist_audit_ip_change_cause_info",
        "The side the address's last change is attributed to (first_seen, vendor_added, vendor_removed, vendor_service, local_path, local_whitelist, unknown); the value is when the change was seen, in Unix seconds.",
        addresses.iter().filter_map(|a| {
            let cause = a.change_cause.as_ref()?;
            let labels = CauseLabels {
                target: &a.target,
                ip: Ip(a.ip),
                port: a.port,
                cause: cause.cause.as_label(),
            };
            Some((labels, unix_seconds(cause.at)))
        }),
    )
}

/// Where failing addresses fail, from raw diagnosis (while the address is in the state explained).
fn encode_diagnoses(addresses: &[&AddressReport], e: &mut DescriptorEncoder) -> fmt::Result {
    let diagnosed = || addresses.iter().filter_map(|a| a.diagnosis.as_ref().map(|d| (*a, d)));
    let rejectors: Vec<(&AddressReport, String, &'static str)> = diagnosed()
        .filter_map(|(a, d)| {
            let kind = d.reject_kind?;
            // A forged reset whose device did not name itself is still a middlebox's.
            let by = d.rejected_by.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            Some((a, by, kind.as_label()))
        })
        .collect();
    gauge(
        e,
        "whitelist_audit_ip_rejected_by_info",
        "1 for a failing address that something rejected: rejected_by is the source of the ICMP unreachable, the server for its own reset (kind tcp_reset), or the hop a forged reset came from (kind rst_from_middlebox; unknown when that hop stays silent); kind is admin_prohibited, port_unreachable, host_unreachable, net_unreachable, tcp_reset or rst_from_middlebox. Needs raw diagnosis (whitelist_audit_raw_probes_enabled).",
        rejectors.iter().map(|(a, by, kind)| {
            let labels = RejectedByLabels {
                target: &a.target,
                ip: Ip(a.ip),
                port: a.port,
                rejected_by: by,
                kind,
            };
            (labels, 1.0)
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_path_last_hop",
        "For a timed-out address, the last hop that answered a TCP traceroute before the path went silent (hop 0 and this host's address when none did); the value is the hop number. Needs raw diagnosis.",
        diagnosed().filter_map(|(a, d)| {
            let last = d.dropped_after_hop?;
            let labels = LastHopLabels {
                target: &a.target,
                ip: Ip(a.ip),
                port: a.port,
                hop: last.hop,
                hop_ip: Ip(last.hop_ip),
            };
            Some((labels, f64::from(last.hop)))
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_reply_ttl",
        "TTL (hop limit) of the raw reply to a failing address's SYN: its reset, SYN-ACK or ICMP unreachable. Needs raw diagnosis.",
        diagnosed().filter_map(|(a, d)| Some((at(a), f64::from(d.reply_ttl?)))),
    )
}

/// The per-address families.
fn encode_addresses(report: &Report, e: &mut DescriptorEncoder) -> fmt::Result {
    let addresses: Vec<&AddressReport> = report.targets.iter().flat_map(|t| &t.addresses).collect();
    let probed = || addresses.iter().filter_map(|a| a.probe.as_ref().map(|p| (*a, p)));
    gauge(
        e,
        "whitelist_audit_ip_up",
        "1 if the last probe of the address ended open, else 0; absent when this host failed to probe it (state error).",
        probed()
            .filter(|(_, p)| p.state.is_verdict())
            .map(|(a, p)| (at(a), flag(p.state == ProbeState::Open))),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_state",
        "State of the last probe: one series per state, exactly one is 1.",
        probed().flat_map(|(a, p)| {
            ProbeState::ALL.into_iter().map(move |state| {
                let labels = StateLabels {
                    target: &a.target,
                    ip: Ip(a.ip),
                    port: a.port,
                    state: state.as_label(),
                };
                (labels, flag(p.state == state))
            })
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_probe_duration_seconds",
        "Duration of the last probe's final attempt.",
        probed().map(|(a, p)| (at(a), p.duration.as_secs_f64())),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_probe_attempts",
        "Attempts the last probe used.",
        probed().map(|(a, p)| (at(a), f64::from(p.attempts))),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_last_probe_timestamp_seconds",
        "When the last probe of the address finished.",
        probed().map(|(a, p)| (at(a), unix_seconds(p.finished_at))),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_state_change_timestamp_seconds",
        "When the address entered its current state (when first seen in it, if it never changed), from the history in the state directory, so it survives restarts.",
        probed().filter_map(|(a, _)| Some((at(a), unix_seconds(a.since.as_ref()?.state)))),
    )?;
    encode_change_causes(&addresses, e)?;
    encode_diagnoses(&addresses, e)?;
    gauge(
        e,
        "whitelist_audit_ip_published",
        "1 if the address is in the target's published set, else 0.",
        addresses.iter().map(|a| {
            let labels = PublishedLabels {
                target: &a.target,
                ip: Ip(a.ip),
            };
            (labels, flag(a.published))
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_whitelisted",
        "1 if the declared whitelist covers the address and port, else 0.",
        addresses.iter().filter_map(|a| a.whitelisted.map(|w| (at(a), flag(w)))),
    )?;
    gauge(
        e,
        "whitelist_audit_ip_finding",
        "1 for the address's finding; absent when it has none.",
        addresses.iter().filter_map(|a| {
            let finding = a.finding?;
            let labels = FindingLabels {
                target: &a.target,
                ip: Ip(a.ip),
                port: a.port,
                finding: finding.as_label(),
            };
            Some((labels, 1.0))
        }),
    )?;
    encode_info(&addresses, e)?;
    encode_ssh(&addresses, e)?;
    encode_sessions(&addresses, e)?;
    encode_bogus(&addresses, e)?;
    encode_whitelist(report, e)
}

/// The whitelist entry families.
fn encode_whitelist(report: &Report, e: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        e,
        "whitelist_audit_whitelist_entry_unused",
        "1 if the whitelist entry covers no published address of any target on this port, else 0.",
        report.whitelist_entries.iter().map(|u| {
            let labels = EntryLabels {
                entry: &u.entry,
                port: u.port,
            };
            (labels, flag(u.unused))
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_whitelist_entry_broad",
        "1 for a whitelist entry shorter than global.broad_entry_prefix: it covers so much that no address inside it is ever reported missing.",
        report.whitelist_entries.iter().filter(|u| u.broad).map(|u| {
            let labels = EntryLabels {
                entry: &u.entry,
                port: u.port,
            };
            (labels, 1.0)
        }),
    )
}

/// What each open `ssh` address's handshake means for the configured clients and keys.
fn encode_ssh(addresses: &[&AddressReport], e: &mut DescriptorEncoder) -> fmt::Result {
    let assessed = || addresses.iter().filter_map(|a| a.ssh.as_deref().map(|r| (*a, r)));
    gauge(
        e,
        "whitelist_audit_ssh_kex_info",
        "1; the algorithms the server would pick with the target's first configured SSH client (none: nothing in common).",
        assessed().filter_map(|(a, r)| {
            let first = r.clients.first()?;
            let labels = KexLabels {
                target: &a.target,
                ip: Ip(a.ip),
                port: a.port,
                kex: first.kex.as_deref().unwrap_or("none"),
                host_key: first.host_key.as_deref().unwrap_or("none"),
                cipher: first.cipher.as_deref().unwrap_or("none"),
                // An AEAD cipher carries its own integrity.
                mac: first
                    .mac
                    .as_deref()
                    .unwrap_or(if first.cipher.as_deref().is_some_and(is_aead) {
                        "implicit"
                    } else {
                        "none"
                    }),
            };
            Some((labels, 1.0))
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_ssh_client_compatible",
        "1 if the SSH client profile agrees with the address on key exchange, host key, cipher and MAC, else 0.",
        assessed().flat_map(|(a, r)| {
            r.clients.iter().map(move |c| {
                let labels = ClientLabels {
                    target: &a.target,
                    ip: Ip(a.ip),
                    port: a.port,
                    client: &c.client,
                };
                (labels, flag(c.compatible))
            })
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_ssh_problem",
        "1 if the address has the SSH problem, else 0: no_common_algorithm, weak_only, host_key_mismatch, host_key_changed.",
        assessed().flat_map(|(a, r)| {
            SshProblem::ALL.into_iter().map(move |problem| {
                let labels = SshProblemLabels {
                    target: &a.target,
                    ip: Ip(a.ip),
                    port: a.port,
                    problem: problem.as_label(),
                };
                (labels, flag(r.has(problem)))
            })
        }),
    )
}

/// The session checks (idle hold, login, SFTP) of each address that had one.
fn encode_sessions(addresses: &[&AddressReport], e: &mut DescriptorEncoder) -> fmt::Result {
    let checked = || addresses.iter().filter_map(|a| a.session.as_ref().map(|s| (*a, s)));
    gauge(
        e,
        "whitelist_audit_ssh_session_state",
        "State of the last session check (check=idle|login|sftp): one series per state of the check, exactly one is 1.",
        checked().flat_map(|(a, s)| {
            s.states().into_iter().flat_map(move |(check, current)| {
                check.states().iter().map(move |state| {
                    let labels = SessionLabels {
                        target: &a.target,
                        ip: Ip(a.ip),
                        port: a.port,
                        check: check.as_label(),
                        state: state.as_label(),
                    };
                    (labels, flag(*state == current))
                })
            })
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_ssh_idle_hold_seconds",
        "How long the last idle hold kept the session silent before its request (or before the server closed it).",
        checked().filter_map(|(a, s)| {
            let idle = s.idle.as_ref().filter(|i| i.hold > std::time::Duration::ZERO)?;
            Some((at(a), idle.hold.as_secs_f64()))
        }),
    )?;
    let methods: Vec<(&AddressReport, String)> = checked()
        .filter_map(|(a, s)| Some((a, s.login.as_ref()?.methods.as_ref()?.join(","))))
        .collect();
    gauge(
        e,
        "whitelist_audit_ssh_auth_methods_info",
        "1; the authentication methods the server offers the monitoring account (its answer to `none`).",
        methods.iter().map(|(a, methods)| {
            let labels = MethodsLabels {
                target: &a.target,
                ip: Ip(a.ip),
                port: a.port,
                methods,
            };
            (labels, 1.0)
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_sftp_response_seconds",
        "From opening the session channel to the SFTP subsystem's answer to `realpath .`, after the last login.",
        checked().filter_map(|(a, s)| {
            let response = s.login.as_ref()?.sftp.as_ref()?.response?;
            Some((at(a), response.as_secs_f64()))
        }),
    )
}

/// Addresses a source returned that are never a vendor's.
fn encode_bogus(addresses: &[&AddressReport], e: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        e,
        "whitelist_audit_bogus_address",
        "1 for an address DNS or a published list returned that is never a vendor's (unspecified, loopback, link-local, multicast): not probed.",
        addresses.iter().filter_map(|a| {
            let bogus = a.bogus?;
            let labels = BogusLabels {
                target: &a.target,
                ip: Ip(a.ip),
                source: bogus.source.as_label(),
            };
            Some((labels, 1.0))
        }),
    )
}

/// The samples of one info family.
type InfoRows<'a> = Vec<(InfoLabels<'a>, f64)>;

/// Each kind's info family (`whitelist_audit_ssh_info`), present even when no address fills it.
fn encode_info(addresses: &[&AddressReport], e: &mut DescriptorEncoder) -> fmt::Result {
    let mut infos: BTreeMap<&str, (&str, InfoRows<'_>)> = CheckKind::ALL
        .iter()
        .flat_map(|row| row.info_families.iter().copied())
        .map(|(family, help)| (family, (help, Vec::new())))
        .collect();
    for (a, p) in addresses.iter().filter_map(|a| Some((*a, a.probe.as_ref()?))) {
        if p.state != ProbeState::Open {
            continue;
        }
        for InfoSeries { family, help, labels } in p.evidence.iter().flat_map(|e| e.info()) {
            let row = InfoLabels {
                address: at(a),
                extra: labels,
            };
            infos.entry(family).or_insert((help, Vec::new())).1.push((row, 1.0));
        }
    }
    for (family, (help, rows)) in infos {
        gauge(e, family, help, rows)?;
    }
    Ok(())
}

/// The per-target families.
#[allow(clippy::cast_precision_loss)] // address counts are far below 2^52
fn encode_targets(report: &Report, e: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        e,
        "whitelist_audit_target_addresses",
        "Addresses of the target, by set (error: published addresses this host failed to probe).",
        report.targets.iter().flat_map(|t| {
            t.counts.by_set().into_iter().map(|(set, n)| {
                let labels = SetLabels { target: &t.target, set };
                (labels, n as f64)
            })
        }),
    )?;
    counter(
        e,
        "whitelist_audit_probe_errors",
        "Probes this host failed to make (no file descriptor, no ephemeral port, ...) since start, by reason: not network verdicts.",
        report.targets.iter().flat_map(|t| {
            t.probe_errors.iter().map(|(fault, n): &(LocalFault, u64)| {
                let labels = FaultLabels {
                    target: &t.target,
                    reason: fault.as_label(),
                };
                (labels, *n)
            })
        }),
    )?;
    counter(
        e,
        "whitelist_audit_published_changes",
        "Addresses (and prefixes too large to probe) added to and removed from the published set since start.",
        report.targets.iter().flat_map(|t| {
            [("added", t.changes.0), ("removed", t.changes.1)].map(|(change, n)| {
                let labels = ChangeLabels {
                    target: &t.target,
                    change,
                };
                (labels, n)
            })
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_target_ssh_variants",
        "Different SSH servers (host key and algorithm lists) among the target's open addresses; more than 1: an inconsistent pool.",
        report.targets.iter().filter_map(|t| {
            let variants = t.ssh_variants?;
            Some((TargetLabels { target: &t.target }, variants as f64))
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_target_client_success_ratio",
        "Chance that a client connecting to the target by name succeeds within `attempts` connections (1 and the target's client_attempts); absent when no address it would pick has a verdict.",
        report.targets.iter().flat_map(|t| {
            t.client_success.iter().map(|odds| {
                let labels = AttemptsLabels {
                    target: &t.target,
                    attempts: odds.attempts,
                };
                (labels, odds.ratio)
            })
        }),
    )
}

/// The per-source families.
#[allow(clippy::cast_precision_loss)] // address counts are far below 2^52
fn encode_sources(report: &Report, e: &mut DescriptorEncoder) -> fmt::Result {
    let sources = || {
        report.targets.iter().flat_map(|t: &TargetReport| {
            t.sources.iter().map(move |source| SourceLabels {
                target: &t.target,
                source,
                reason: None,
            })
        })
    };
    gauge(
        e,
        "whitelist_audit_source_up",
        "1 if the source's last refresh succeeded, else 0.",
        sources().filter_map(|l| l.source.up.map(|up| (l, flag(up)))),
    )?;
    gauge(
        e,
        "whitelist_audit_source_addresses",
        "Addresses the source holds now (a published prefix too large to probe counts as one).",
        sources().map(|l| (l, l.source.addresses as f64)),
    )?;
    gauge(
        e,
        "whitelist_audit_source_last_success_timestamp_seconds",
        "When the source last refreshed successfully.",
        sources().filter_map(|l| l.source.last_success.map(|at| (l, unix_seconds(at)))),
    )?;
    gauge(
        e,
        "whitelist_audit_dns_family_up",
        "1 if the family's (A, AAAA) last DNS refresh succeeded, else 0; the other family's answers count either way.",
        report.targets.iter().flat_map(|t| {
            t.sources.iter().flat_map(move |s| {
                s.families.iter().map(move |(family, up)| {
                    let labels = FamilyLabels {
                        target: &t.target,
                        family: family.as_label(),
                    };
                    (labels, flag(*up))
                })
            })
        }),
    )?;
    counter(
        e,
        "whitelist_audit_source_refresh_failures",
        "Failed refreshes of the source since start, by reason.",
        sources().flat_map(|l| {
            l.source.failures.iter().map(move |(reason, n)| {
                let labels = SourceLabels {
                    reason: Some(reason.as_label()),
                    ..l
                };
                (labels, *n)
            })
        }),
    )
}

/// The published-prefix families.
fn encode_prefixes(report: &Report, e: &mut DescriptorEncoder) -> fmt::Result {
    gauge(
        e,
        "whitelist_audit_prefix_unprobed",
        "1 for a published prefix too large to expand into addresses: audited, not probed.",
        report.targets.iter().flat_map(|t| {
            t.prefixes.iter().filter(|p| !p.probed).map(|p| {
                let labels = PrefixLabels {
                    target: &t.target,
                    prefix: Prefix(&p.prefix),
                };
                (labels, 1.0)
            })
        }),
    )?;
    gauge(
        e,
        "whitelist_audit_prefix_uncovered",
        "1 for each part of a published prefix that no whitelist entry covers on the target's port.",
        report.targets.iter().flat_map(|t| {
            t.prefixes.iter().flat_map(move |p| {
                p.uncovered.iter().map(move |part| {
                    let labels = UncoveredLabels {
                        target: &t.target,
                        prefix: Prefix(&p.prefix),
                        uncovered: Prefix(part),
                        port: t.port,
                    };
                    (labels, 1.0)
                })
            })
        }),
    )
}

/// The daemon's own families.
fn encode_daemon(status: DaemonStatus, e: &mut DescriptorEncoder) -> fmt::Result {
    single(
        e,
        "whitelist_audit_last_sweep_timestamp_seconds",
        "When the last complete sweep of every address finished.",
        status.sweep.last_finished.map(unix_seconds),
    )?;
    single(
        e,
        "whitelist_audit_sweep_duration_seconds",
        "How long the last complete sweep took.",
        status.sweep.last_duration.map(|d| d.as_secs_f64()),
    )?;
    single(
        e,
        "whitelist_audit_config_last_reload_successful",
        "1 if the last configuration reload succeeded, else 0.",
        Some(flag(status.reload_ok)),
    )?;
    single(
        e,
        "whitelist_audit_raw_probes_enabled",
        "1 if failing addresses get raw diagnosis (who rejected, forged resets, the hop where drops start); 0 when global.diagnosis.raw_probes is off or the process lacks CAP_NET_RAW.",
        Some(flag(status.raw_probes)),
    )?;
    gauge(
        e,
        "whitelist_audit_build_info",
        "1; the version of whitelist-audit.",
        [(
            BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            },
            1.0,
        )],
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::config;
    use crate::core::outcome::{Attempt, Evidence, ProbeResult};
    use crate::core::state::{State, TargetId};

    /// Evidence as a kind would report it; the views know kinds only through the trait.
    #[derive(Debug)]
    struct Software(&'static str);

    impl Evidence for Software {
        fn summary(&self) -> String {
            self.0.to_string()
        }
        fn json_fields(&self) -> Vec<(&'static str, serde_json::Value)> {
            vec![("software", self.0.into())]
        }
        fn info(&self) -> Vec<InfoSeries> {
            vec![InfoSeries {
                family: "whitelist_audit_ssh_info",
                help: "1; software.",
                labels: vec![("software", self.0.to_string())],
            }]
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    fn rendered(state: &State) -> String {
        let (sender, receiver) = watch::channel(Arc::new(state.snapshot()));
        let text = render(&registry(receiver));
        drop(sender);
        text
    }

    #[test]
    fn typed_labels_render_as_the_contract_says() {
        let yaml = "targets:\n  - {name: pool, port: 2222, static: [\"2001:db8::0:1\", 192.0.2.7]}\n";
        let raw = config::parse_yaml(Path::new("m.yml"), yaml).unwrap();
        let mut state = State::new(Arc::new(config::build(Path::new("m.yml"), &raw).unwrap()));
        let open = Attempt {
            evidence: Some(Arc::new(Software("OpenSSH_9.6p1"))),
            ..Attempt::ended(ProbeState::Open, Duration::from_millis(3), "SSH-2.0-OpenSSH_9.6p1")
        };
        let now = SystemTime::now();
        state.record_probe(
            TargetId(0),
            "2001:db8::1".parse().unwrap(),
            ProbeResult::from_attempt(open, 1, now),
        );
        let fault = Attempt::fault(LocalFault::FdExhausted, Duration::ZERO, "connect: Too many open files");
        state.record_probe(
            TargetId(0),
            "192.0.2.7".parse().unwrap(),
            ProbeResult::from_attempt(fault, 3, now),
        );
        let text = rendered(&state);
        for line in [
            "whitelist_audit_ip_up{target=\"pool\",ip=\"2001:db8::1\",port=\"2222\"} 1.0",
            "whitelist_audit_ip_state{target=\"pool\",ip=\"192.0.2.7\",port=\"2222\",state=\"error\"} 1.0",
            "whitelist_audit_ip_state{target=\"pool\",ip=\"192.0.2.7\",port=\"2222\",state=\"unreachable\"} 0.0",
            "whitelist_audit_ip_published{target=\"pool\",ip=\"192.0.2.7\"} 1.0",
            "whitelist_audit_ssh_info{target=\"pool\",ip=\"2001:db8::1\",port=\"2222\",software=\"OpenSSH_9.6p1\"} 1.0",
            "whitelist_audit_target_addresses{target=\"pool\",set=\"up\"} 1.0",
            "whitelist_audit_target_addresses{target=\"pool\",set=\"error\"} 1.0",
            "whitelist_audit_target_addresses{target=\"pool\",set=\"blocked\"} 0.0",
            "whitelist_audit_probe_errors_total{target=\"pool\",reason=\"fd_exhausted\"} 1",
            "whitelist_audit_probe_errors_total{target=\"pool\",reason=\"no_local_address\"} 0",
            "whitelist_audit_source_up{target=\"pool\",source=\"static\"} 1.0",
            "whitelist_audit_published_changes_total{target=\"pool\",change=\"added\"} 2",
            // The address in error is no candidate: the one left is open.
            "whitelist_audit_target_client_success_ratio{target=\"pool\",attempts=\"1\"} 1.0",
            "whitelist_audit_target_client_success_ratio{target=\"pool\",attempts=\"3\"} 1.0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(
            !text.contains("whitelist_audit_ip_up{target=\"pool\",ip=\"192.0.2.7\""),
            "an address this host failed to probe has no ip_up: {text}"
        );
        assert!(
            !text.contains("whitelist_audit_ip_finding{"),
            "error is never a finding: {text}"
        );
    }

    #[test]
    fn the_info_family_of_every_kind_is_described_even_when_empty() {
        let yaml = "targets:\n  - {name: t, check: tcp, static: [192.0.2.1]}\n";
        let raw = config::parse_yaml(Path::new("m.yml"), yaml).unwrap();
        let state = State::new(Arc::new(config::build(Path::new("m.yml"), &raw).unwrap()));
        assert!(rendered(&state).contains("# TYPE whitelist_audit_ssh_info gauge"));
    }

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

    #[test]
    fn session_checks_render_one_state_series_per_state_and_their_measures() {
        use crate::core::session::{IdleResult, LoginResult, SessionState, SftpResult};
        // PATH is set in every test process: only the presence of a credential matters here.
        let yaml = "targets:\n  - name: pool\n    static: [192.0.2.7]\n    ssh:\n      idle_hold: 100s\n      auth: {username: m, password_env: PATH}\n      sftp: true\n";
        let raw = config::parse_yaml(Path::new("m.yml"), yaml).unwrap();
        let mut state = State::new(Arc::new(config::build(Path::new("m.yml"), &raw).unwrap()));
        let ip = "192.0.2.7".parse().unwrap();
        let now = SystemTime::now();
        let open = ProbeResult::from_attempt(Attempt::ended(ProbeState::Open, Duration::ZERO, "ok"), 1, now);
        state.record_probe(TargetId(0), ip, open);
        let session = state.config.targets[0].ssh.session.clone();
        state.record_idle(
            TargetId(0),
            ip,
            IdleResult {
                state: SessionState::IdleKilled,
                hold: Duration::from_secs(100),
                authenticated: true,
                detail: String::new(),
                finished_at: now,
            },
            session.idle,
        );
        state.record_login(
            TargetId(0),
            ip,
            LoginResult {
                state: SessionState::LoginOk,
                methods: Some(vec!["publickey".into(), "password".into()]),
                detail: String::new(),
                sftp: Some(SftpResult {
                    state: SessionState::SftpOk,
                    response: Some(Duration::from_millis(250)),
                    detail: String::new(),
                }),
                finished_at: now,
            },
            session.login.as_ref(),
        );
        let text = rendered(&state);
        let at = r#"target="pool",ip="192.0.2.7",port="22""#;
        for line in [
            format!(r#"whitelist_audit_ssh_session_state{{{at},check="idle",state="idle_killed"}} 1"#),
            format!(r#"whitelist_audit_ssh_session_state{{{at},check="idle",state="idle_ok"}} 0"#),
            format!(r#"whitelist_audit_ssh_session_state{{{at},check="login",state="login_ok"}} 1"#),
            format!(r#"whitelist_audit_ssh_session_state{{{at},check="sftp",state="sftp_ok"}} 1"#),
            format!("whitelist_audit_ssh_idle_hold_seconds{{{at}}} 100"),
            format!(r#"whitelist_audit_ssh_auth_methods_info{{{at},methods="publickey,password"}} 1"#),
            format!("whitelist_audit_sftp_response_seconds{{{at}}} 0.25"),
        ] {
            assert!(text.contains(&line), "missing {line}:\n{text}");
        }
        let states = text
            .lines()
            .filter(|l| l.starts_with("whitelist_audit_ssh_session_state{"))
            .count();
        assert_eq!(states, 5 + 7 + 3, "every state of each check that ran");
    }
}
