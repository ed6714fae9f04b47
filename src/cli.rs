//! The command line: `serve`, `check`, `request`, `validate` and `demo`. Exit codes are a contract: 0
//! clean, 1 findings (or a failed source) in `check` and something to request in `request`, 2 bad input.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;

use crate::app::{self, Shared};
use crate::change_request;
use crate::config::{self, CheckKind, Config, ConfigError, ResolverSpec, defaults};
use crate::core::event::{Cause, EventQuery};
use crate::core::history::History;
use crate::core::request::ChangeRequest;
use crate::logging::{self, LogFormat};
use crate::output;
use crate::probe::Os;

/// Exit code: success, no findings.
pub const EXIT_OK: u8 = 0;
/// Exit code: `check` found findings, a failed source, or a target with no address.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: bad configuration, whitelist or flags.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Probes every published address of a service and diffs it against your declared firewall whitelist.
#[derive(Debug, Parser)]
#[command(
    name = "whitelist-audit",
    version,
    about,
    long_about = None,
    after_help = "Examples:
  whitelist-audit demo                                              see every finding on loopback, no network needed
  whitelist-audit check --host sftp.vendor.example                  are all its addresses reachable from here?
  whitelist-audit check --host sftp.vendor.example --whitelist whitelist.yml --resolver 192.0.2.53
  whitelist-audit request --config.file config.yml --format nftables  the firewall change to ask for
  whitelist-audit validate --config.file config.yml
  whitelist-audit serve --config.file config.yml                    metrics on :10022/metrics

SSH session checks (off by default; keys ssh.idle_hold, ssh.auth, ssh.sftp in the configuration):
  an idle hold keeps one session per address silent, then asks for an answer: idle_killed when a
  firewall or NAT on the path forgot the flow. Without ssh.auth the session waits before
  authentication, and the server ends that itself after its LoginGraceTime (OpenSSH: 120s), so such
  a hold is meaningful only below it (longer: server_closed, not a path verdict); with ssh.auth the
  hold is made logged in. Secrets come from password_env, password_file or private_key_file only.

Exit codes: 0 clean, 1 findings (check) or something to request (request), 2 bad configuration,
whitelist or flags."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Least severe log level shown: error, warn, info, debug, trace [default: info for serve,
    /// warn for check and validate].
    #[arg(long = "log.level", global = true)]
    pub log_level: Option<tracing::Level>,
    /// Log line format on stderr.
    #[arg(long = "log.format", global = true, value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: probe every address each interval; serve /metrics, the status page at / and
    /// the JSON API at /api/v1/.
    Serve(ServeArgs),
    /// One refresh and one sweep, then a table (or JSON); exit 0 clean, 1 findings, 2 bad input.
    Check(CheckArgs),
    /// The change request for the firewall team: addresses to add, blocked ones with the evidence,
    /// entries to remove; exit 0 when there is nothing to request, 1 when there is, 2 bad input.
    Request(RequestArgs),
    /// The timeline of changes from the daemon's history, each attributed to the side that changed
    /// (the vendor's set or service, our path or whitelist), for a ticket; exit 0, or 2 bad input.
    Report(ReportArgs),
    /// Check the configuration and whitelist files; exit 0 or 2.
    Validate(ValidateArgs),
    /// A vendor pool, a whitelist and every finding on loopback: see it work, no network, no
    /// configuration needed.
    Demo(DemoArgs),
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address to serve /metrics on (loopback: the demo is for you).
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = "127.0.0.1:10022", value_parser = ListenAddress::parse)]
    pub listen_address: ListenAddress,
}

/// Where the HTTP endpoints listen: `IP:PORT`, `[IPv6]:PORT`, or `:PORT` for every interface (the
/// form every Prometheus exporter accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// `:PORT`: IPv6 and IPv4 on every interface, or IPv4 alone where the host has no IPv6.
    Any(u16),
    At(SocketAddr),
}

impl ListenAddress {
    /// Parses `IP:PORT`, `[IPv6]:PORT` or `:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(port) = text.strip_prefix(':') {
            return port
                .parse()
                .map(Self::Any)
                .map_err(|_| format!("invalid port in `{text}`: write :10022, 0.0.0.0:10022 or [::1]:10022"));
        }
        text.parse()
            .map(Self::At)
            .map_err(|_| format!("invalid listen address `{text}`: write :10022, 0.0.0.0:10022 or [::1]:10022"))
    }

    async fn bind(self) -> std::io::Result<tokio::net::TcpListener> {
        match self {
            Self::At(address) => tokio::net::TcpListener::bind(address).await,
            Self::Any(port) => match tokio::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port)).await {
                Ok(listener) => Ok(listener),
                // No IPv6 on this host: IPv4 alone. Any other error (the port is taken) is the answer.
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                    ) || err.raw_os_error() == Some(97) =>
                {
                    tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).await
                }
                Err(err) => Err(err),
            },
        }
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any(port) => write!(f, ":{port}"),
            Self::At(address) => write!(f, "{address}"),
        }
    }
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: PathBuf,
    /// Address to serve the status page /, the JSON API /api/v1/, /metrics, /-/healthy, /-/ready
    /// and /-/reload on: IP:PORT, [IPv6]:PORT, or :PORT for every interface.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = defaults::LISTEN_ADDRESS, value_parser = ListenAddress::parse)]
    pub listen_address: ListenAddress,
    /// Serve POST /-/reload (as Prometheus' flag of that name). Off, it answers 403; SIGHUP
    /// reloads either way.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,
    /// HTTP connections served at once; more are closed at accept, so a flood of idle
    /// connections cannot take the probes' file descriptors.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// TLS and basic authentication for every endpoint, in the exporter-toolkit format that
    /// Prometheus' own exporters read (TLS server settings, users with bcrypt hashes, response
    /// headers); reloaded with the configuration.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// Flags of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The configuration file.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: PathBuf,
}

/// Flags of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// Flags of `request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub audit: AuditArgs,
    /// text: for a ticket; yaml: the entries to add as a whitelist file (valid for validate);
    /// nftables, iptables: egress rules for the missing pairs (never applied); csv: a row each.
    #[arg(long, value_enum, default_value = "text")]
    pub format: RequestFormat,
}

/// Flags of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The daemon's configuration file: its `global.state_dir` holds the history.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: PathBuf,
    /// From when: a duration back from now (24h, 90m, 7d), an RFC 3339 time, or unix seconds.
    #[arg(long, value_name = "WHEN", default_value = "24h")]
    pub since: String,
    /// text for a terminal, markdown for a ticket.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Only this target.
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Only this address.
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<IpAddr>,
    /// Only changes attributed to this cause: `first_seen`, `vendor_added`, `vendor_removed`,
    /// `vendor_service`, `local_path`, `local_whitelist` or `unknown`.
    #[arg(long, value_name = "CAUSE", value_parser = Cause::parse)]
    pub cause: Option<Cause>,
    /// Also list addresses seen for the first time when the audit began (no change of either side).
    #[arg(long)]
    pub first_seen: bool,
}

/// `report --format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
}

/// `request --format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RequestFormat {
    Text,
    Yaml,
    Nftables,
    Iptables,
    Csv,
}

/// What `check` and `request` audit: a configuration file, or a host and flags.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(true).args(["config_file", "host", "static_addresses"]))]
pub struct AuditArgs {
    /// The configuration file. The flags below then cannot be used: the file says it all.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Check this host name (every A and AAAA address) without a configuration file. An address
    /// here is taken as --static.
    #[arg(long, value_name = "NAME", conflicts_with = "config_file")]
    pub host: Option<String>,
    /// An address to check besides (or instead of) the host's; repeat for several.
    #[arg(long = "static", value_name = "ADDR", conflicts_with = "config_file")]
    pub static_addresses: Vec<IpAddr>,
    /// The target's name in the output and the whitelist's `target:` [default: the host, or the first address].
    #[arg(long, value_name = "NAME", conflicts_with = "config_file")]
    pub name: Option<String>,
    /// The port to probe.
    #[arg(long, value_name = "N", default_value_t = defaults::PORT, conflicts_with = "config_file", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// The declared whitelist to diff against. Without it, every published address is expected to
    /// be open and only `blocked` is reported.
    #[arg(long, value_name = "FILE", conflicts_with = "config_file")]
    pub whitelist: Option<PathBuf>,
    /// A resolver: `system` (resolv.conf and /etc/hosts), IP, IP:PORT or [IPv6]:PORT; repeat for several [default: system].
    #[arg(long, value_name = "ADDR", conflicts_with = "config_file", value_parser = ResolverSpec::parse)]
    pub resolver: Vec<ResolverSpec>,
    /// Ask DNS for IPv4 (A) only.
    #[arg(short = '4', conflicts_with_all = ["config_file", "ipv6_only"])]
    pub ipv4_only: bool,
    /// Ask DNS for IPv6 (AAAA) only.
    #[arg(short = '6', conflicts_with = "config_file")]
    pub ipv6_only: bool,
    /// Probe loopback addresses that DNS returns (an SSH tunnel, a lab) instead of reporting them as
    /// `bogus_address`. `localhost` names need no flag.
    #[arg(long, conflicts_with = "config_file")]
    pub allow_local: bool,
    /// What to check on top of the TCP handshake.
    #[arg(long, value_parser = check_kinds(), default_value = "ssh", conflicts_with = "config_file")]
    pub check: CheckKind,
    /// One attempt's timeout (shorter than the daemon's 10s: someone is waiting).
    #[arg(long, value_name = "DURATION", default_value = "3s", conflicts_with = "config_file", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Attempts per address; the first success ends them.
    #[arg(long, value_name = "N", default_value_t = 2, conflicts_with = "config_file", value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts: u32,
    /// Pause between two attempts at one address.
    #[arg(long, value_name = "DURATION", default_value = "1s", conflicts_with = "config_file", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// An SSH client whose algorithms every address must agree with, by profile name (openssh,
    /// openssh-9.2, openssh-7.4, paramiko, paramiko-2.12, jsch, jsch-mwiede, putty, putty-0.83);
    /// repeat for several [default: openssh].
    #[arg(long = "ssh-client", value_name = "NAME", conflicts_with = "config_file")]
    pub ssh_clients: Vec<String>,
    /// A host key fingerprint every address must present, as `ssh-keygen -lf` prints it
    /// (SHA256:...); repeat for several.
    #[arg(long = "host-key", value_name = "SHA256:...", conflicts_with = "config_file")]
    pub host_keys: Vec<String>,
}

/// `--check` values: every probe kind, from the kind list.
fn check_kinds() -> impl TypedValueParser<Value = CheckKind> {
    PossibleValuesParser::new(
        CheckKind::ALL
            .iter()
            .map(|row| PossibleValue::new(row.label).help(row.help)),
    )
    .map(|label| CheckKind::parse(&label).expect("offered values parse"))
}

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let quiet_default = if matches!(cli.command, Command::Serve(_)) {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    logging::init(cli.log_level.unwrap_or(quiet_default), cli.log_format);
    match cli.command {
        Command::Validate(args) => match config::load(&args.config_file) {
            Ok(config) => {
                println!(
                    "{}: valid: {} target(s), {} whitelist entr{} in {} file(s)",
                    args.config_file.display(),
                    config.targets.len(),
                    config.whitelist.entries.len(),
                    if config.whitelist.entries.len() == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    config.whitelist.files.len()
                );
                ExitCode::from(EXIT_OK)
            }
            Err(err) => bad_input(&err),
        },
        Command::Check(args) => check(args).await,
        Command::Request(args) => request(args).await,
        Command::Report(args) => report(&args),
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo(args).await,
    }
}

fn bad_input(err: &ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// Loads what `check` and `request` audit, and runs one refresh and one sweep.
async fn audit_once(args: &AuditArgs) -> Result<Arc<crate::core::state::Snapshot>, ExitCode> {
    let config = match &args.config_file {
        Some(file) => match config::load(file) {
            Ok(config) => config,
            Err(err) => return Err(bad_input(&err)),
        },
        None => match config_from_flags(args) {
            Ok(config) => config,
            Err(message) => {
                eprintln!("error: {message}");
                return Err(ExitCode::from(EXIT_BAD_INPUT));
            }
        },
    };
    let progress: Option<app::ProgressReport> = std::io::stderr()
        .is_terminal()
        .then(|| Box::new(show_progress) as app::ProgressReport);
    let shown = progress.is_some();
    let started = std::time::SystemTime::now();
    let raw = open_raw_probes(&config);
    let snapshot = app::check_once(config, Arc::new(Os), raw, progress).await;
    if shown {
        // Clear the progress line before the output.
        eprint!("\r\x1b[2K");
    }
    // Only a daemon's history in state_dir knows since when; a state this run saw first (or a
    // change it saw itself) has no known beginning, and the run's own clock is no evidence.
    let mut snapshot = crate::core::state::Snapshot::clone(&snapshot);
    for address in snapshot.report.targets.iter_mut().flat_map(|t| t.addresses.iter_mut()) {
        if address
            .since
            .as_ref()
            .is_some_and(|s| s.state >= started || s.finding >= started)
        {
            address.since = None;
        }
        if address.change_cause.as_ref().is_some_and(|c| c.at >= started) {
            address.change_cause = None;
        }
    }
    let daemons: std::collections::VecDeque<_> = snapshot
        .timeline
        .changes
        .iter()
        .filter(|c| c.at < started)
        .cloned()
        .collect();
    snapshot.timeline.changes = Arc::new(daemons);
    Ok(Arc::new(snapshot))
}

/// Raw diagnosis, as the configuration asks and this process may (read at start: a reload does
/// not open or close the sockets). One line says so when it is off, and how to turn it on.
fn open_raw_probes(config: &Config) -> Option<Arc<crate::probe::raw::RawProber>> {
    if config.global.diagnosis.raw_probes == crate::config::RawProbes::Off {
        tracing::info!("raw diagnosis off: global.diagnosis.raw_probes is off");
        return None;
    }
    match crate::probe::raw::RawProber::open() {
        Ok(prober) => {
            tracing::info!(
                ?prober,
                "raw diagnosis on: failing addresses get raw SYNs, timeouts a TCP traceroute"
            );
            Some(Arc::new(prober))
        }
        Err(why) => {
            tracing::warn!("{}", why.explain());
            None
        }
    }
}

async fn check(args: CheckArgs) -> ExitCode {
    let snapshot = match audit_once(&args.audit).await {
        Ok(snapshot) => snapshot,
        Err(code) => return code,
    };
    let report = &snapshot.report;
    match args.output {
        OutputFormat::Table => {
            print!("{}", output::table(report));
            let day = EventQuery {
                since: snapshot.taken_at.checked_sub(Duration::from_secs(24 * 3600)),
                ..EventQuery::default()
            };
            let entries = snapshot.timeline.select(&day, None, false);
            if !entries.is_empty() {
                println!("\nChanges in the last 24 h, from the daemon's history (whitelist-audit report for more):");
                print!("{}", output::timeline_text(&entries));
            }
        }
        OutputFormat::Json => print!("{}", output::json(report)),
    }
    if output::Summary::of(report).is_clean() {
        ExitCode::from(EXIT_OK)
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

async fn request(args: RequestArgs) -> ExitCode {
    let snapshot = match audit_once(&args.audit).await {
        Ok(snapshot) => snapshot,
        Err(code) => return code,
    };
    let request = ChangeRequest::of(&snapshot.report, snapshot.broad_entry_prefix);
    let format = match args.format {
        RequestFormat::Text => change_request::Format::Text,
        RequestFormat::Yaml => change_request::Format::Yaml,
        RequestFormat::Nftables => change_request::Format::Nftables,
        RequestFormat::Iptables => change_request::Format::Iptables,
        RequestFormat::Csv => change_request::Format::Csv,
    };
    print!("{}", change_request::render(&request, format, snapshot.taken_at));
    let failed_sources = snapshot
        .report
        .targets
        .iter()
        .flat_map(|t| &t.sources)
        .filter(|s| s.up == Some(false))
        .count();
    if failed_sources > 0 {
        eprintln!(
            "warning: {failed_sources} source(s) failed; the request is made from their last good sets (see check)"
        );
    }
    if request.is_empty() {
        ExitCode::from(EXIT_OK)
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

fn report(args: &ReportArgs) -> ExitCode {
    let config = match config::load(&args.config_file) {
        Ok(config) => config,
        Err(err) => return bad_input(&err),
    };
    let now = std::time::SystemTime::now();
    let since = match crate::core::event::parse_since(&args.since, now) {
        Ok(since) => since,
        Err(message) => {
            eprintln!("error: --since: {message}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let state_dir = &config.global.state_dir;
    let back = match crate::history_log::read_all(state_dir) {
        Ok(back) => back,
        Err(err) => {
            eprintln!("error: cannot read the history in {}: {err}", state_dir.display());
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if !back.skipped.is_empty() {
        eprintln!(
            "warning: {} line(s) of the history in {} are not events (a write cut short, or an edit): skipped",
            back.skipped.len(),
            state_dir.display()
        );
    }
    if back.events.is_empty() {
        eprintln!(
            "note: no history in {}: `whitelist-audit serve` with this configuration writes it",
            state_dir.display()
        );
    }
    let mut history = History::new(usize::MAX);
    history.set_lags(&crate::core::cause::lags(&config));
    history.replay(back.events);
    let timeline = history.timeline();
    // A target renamed or removed since still has its story in the history.
    if let Some(target) = args
        .target
        .as_deref()
        .filter(|t| !config.targets.iter().any(|c| c.name == *t) && !timeline.changes.iter().any(|c| c.target == *t))
    {
        eprintln!(
            "error: --target `{target}`: neither in {} nor in the history in {}",
            args.config_file.display(),
            state_dir.display()
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let query = EventQuery {
        since: Some(since),
        target: args.target.clone(),
        ip: args.ip.map(|ip| ip.to_canonical()),
        aspect: None,
        limit: usize::MAX,
    };
    let entries = timeline.select(&query, args.cause, args.first_seen);
    let scope = format!(
        "changes since {}, from the history in {}",
        output::clock(since),
        state_dir.display()
    );
    match args.format {
        ReportFormat::Text => {
            println!("whitelist-audit report: {scope}");
            print!("{}", output::timeline_text(&entries));
            println!("{}", output::cause_counts(&entries));
        }
        ReportFormat::Markdown => {
            println!("## whitelist-audit: {scope}\n");
            println!("{}\n", output::cause_counts(&entries));
            if !entries.is_empty() {
                print!("{}", output::timeline_markdown(&entries));
            }
            println!("\n{}", output::CAUSES_EXPLAINED);
        }
    }
    ExitCode::from(EXIT_OK)
}

/// One line on stderr, rewritten in place: where `check` is and how long it has taken.
fn show_progress(progress: app::Progress) {
    let elapsed = progress.elapsed.as_secs();
    if progress.discovering {
        eprint!("\r\x1b[2Kasking DNS and the published lists... {elapsed}s");
    } else if progress.diagnoses > 0 {
        eprint!(
            "\r\x1b[2Kprobed {} addresses, {} open; diagnosing {} failing address(es) with raw packets (a trace takes seconds)... {elapsed}s",
            progress.total, progress.open, progress.diagnoses
        );
    } else if progress.sessions > 0 {
        eprint!(
            "\r\x1b[2Kprobed {} addresses, {} open; {} session check(s) running (an idle hold lasts ssh.idle_hold)... {elapsed}s",
            progress.total, progress.open, progress.sessions
        );
    } else {
        eprint!(
            "\r\x1b[2Kprobed {} of {} addresses, {} open... {elapsed}s",
            progress.done, progress.total, progress.open
        );
    }
}

/// Builds a one-target configuration from `check`'s flags, through the same loader as a file, so
/// the same validation applies; a refusal names the flag, not a file the user never wrote.
fn config_from_flags(args: &AuditArgs) -> Result<Config, String> {
    let quote = |s: &str| serde_json::to_string(s).expect("string serializes");
    let (host, mut statics) = match args.host.as_deref().map(str::trim) {
        // An address given as the host is what the user wants checked: a static address.
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) => (None, vec![crate::prefix::canonical_ip(ip)]),
            Err(_) => (Some(text.trim_end_matches('.')), Vec::new()),
        },
        None => (None, Vec::new()),
    };
    // `::ffff:198.51.100.7` is 198.51.100.7: named and probed as such.
    statics.extend(args.static_addresses.iter().map(|ip| crate::prefix::canonical_ip(*ip)));
    if let Some(host) = host
        && (host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!("--host `{host}` is not a host name or an address"));
    }
    let name = match (&args.name, host, statics.first()) {
        (Some(name), _, _) => name.clone(),
        (None, Some(host), _) => host.to_string(),
        (None, None, Some(ip)) => ip.to_string(),
        (None, None, None) => return Err("give --host NAME or --static ADDR".into()),
    };
    let mut yaml = String::from("global:\n");
    let duration = |d: Duration| quote(&humantime::format_duration(d).to_string());
    let _ = writeln!(yaml, "  timeout: {}", duration(args.timeout));
    let _ = writeln!(yaml, "  attempts: {}", args.attempts);
    let _ = writeln!(yaml, "  retry_delay: {}", duration(args.retry_delay));
    if let Some(whitelist) = &args.whitelist {
        let _ = writeln!(yaml, "  whitelist: {}", quote(&whitelist.to_string_lossy()));
    }
    if !args.resolver.is_empty() {
        let list: Vec<String> = args.resolver.iter().map(|r| quote(&r.to_string())).collect();
        let _ = writeln!(yaml, "  resolvers: [{}]", list.join(", "));
    }
    let _ = writeln!(
        yaml,
        "targets:\n  - name: {}\n    port: {}\n    check: {}",
        quote(&name),
        args.port,
        args.check.as_label()
    );
    if let Some(host) = host {
        let _ = writeln!(yaml, "    host: {}", quote(host));
    }
    if !statics.is_empty() {
        let list: Vec<String> = statics.iter().map(|ip| quote(&ip.to_string())).collect();
        let _ = writeln!(yaml, "    static: [{}]", list.join(", "));
    }
    if args.allow_local {
        yaml.push_str("    allow_local_addresses: true\n");
    }
    if !args.ssh_clients.is_empty() || !args.host_keys.is_empty() {
        yaml.push_str("    ssh:\n");
        if !args.ssh_clients.is_empty() {
            let list: Vec<String> = args.ssh_clients.iter().map(|c| quote(c)).collect();
            let _ = writeln!(yaml, "      clients: [{}]", list.join(", "));
        }
        if !args.host_keys.is_empty() {
            let list: Vec<String> = args.host_keys.iter().map(|k| quote(k)).collect();
            let _ = writeln!(yaml, "      host_keys: [{}]", list.join(", "));
        }
    }
    if args.ipv4_only || args.ipv6_only {
        let family = if args.ipv4_only { "ipv4" } else { "ipv6" };
        let _ = writeln!(yaml, "    address_families: [{family}]");
    }
    let origin = Path::new("the command line");
    let raw = config::parse_yaml(origin, &yaml).map_err(|e| e.message)?;
    config::build(origin, &raw).map_err(|e| flag_message(&e))
}

/// A refusal of a generated configuration, in terms of the flag that caused it.
fn flag_message(err: &ConfigError) -> String {
    let key = err.key.as_deref().unwrap_or_default();
    let flag = [
        ("global.whitelist", "--whitelist"),
        ("global.timeout", "--timeout"),
        ("global.retry_delay", "--retry-delay"),
        ("global.attempts", "--attempts"),
        ("global.resolvers", "--resolver"),
        (".name", "--name"),
        (".static", "--static"),
        (".host", "--host"),
        (".port", "--port"),
        (".ssh.clients", "--ssh-client"),
        (".ssh.host_keys", "--host-key"),
        (".ssh", "--check"),
    ]
    .iter()
    .find(|(part, _)| key.contains(part))
    .map_or("", |(_, flag)| *flag);
    if err.message.starts_with("unknown target") {
        // The whitelist tags entries for a target by name; --host names the target after the host.
        return format!(
            "{}\n  with --host, the target is named after the host: give --name with the name the whitelist uses",
            err.summary()
        );
    }
    if err.file == Path::new("the command line") {
        if flag.is_empty() {
            err.message.clone()
        } else {
            format!("{flag}: {}", err.message)
        }
    } else {
        // The whitelist file's own refusal: its file, line and key are the user's.
        err.summary()
    }
}

/// Whether the daemon can keep its state in `dir`: created if missing, and a file written there.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".whitelist-audit-write-test");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match config::load(&args.config_file) {
        Ok(config) => Arc::new(config),
        Err(err) => return bad_input(&err),
    };
    if let Err(err) = writable(&config.global.state_dir) {
        eprintln!(
            "error: {}: global.state_dir `{}` is not a writable directory ({err}): the last good published lists, the SSH host keys and refused logins, and the history would not survive a restart",
            config.path.display(),
            config.global.state_dir.display()
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let security = match load_security(args.web_config_file.as_deref()) {
        Ok(security) => Arc::new(std::sync::RwLock::new(Arc::new(security))),
        Err(err) => return bad_input(&err),
    };
    let listener = match args.listen_address.bind().await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", args.listen_address);
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    tracing::info!(
        file = %args.config_file.display(),
        listen = %listener.local_addr().map_or_else(|_| args.listen_address.to_string(), |a| a.to_string()),
        targets = config.targets.len(),
        "whitelist-audit started"
    );
    let raw = open_raw_probes(&config);
    let shared = Shared::new(config);
    if let Some(raw) = raw {
        shared.enable_raw_probes(raw);
    }
    let (app_reloads, reload_rx) = mpsc::channel(4);
    let (reload_tx, requests) = mpsc::channel(4);
    tokio::spawn(reload_web_then_app(
        requests,
        app_reloads,
        args.web_config_file.clone(),
        Arc::clone(&security),
    ));
    let router = crate::http::router(
        shared.subscribe(),
        reload_tx.clone(),
        args.enable_lifecycle,
        Arc::clone(&security),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_http = stop_rx.clone();
    let limits = crate::http::WebLimits {
        max_connections: args.max_connections as usize,
        ..crate::http::WebLimits::default()
    };
    let server = tokio::spawn(crate::http::serve(listener, router, limits, security, async move {
        let _ = stop_http.wait_for(|stop| *stop).await;
    }));
    tokio::spawn(forward_sighup(reload_tx));
    let mut stop_loop = stop_rx;
    let scheduler = tokio::spawn(app::run(Arc::clone(&shared), Arc::new(Os), reload_rx, async move {
        let _ = stop_loop.wait_for(|stop| *stop).await;
    }));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // The loop may be inside a DNS refresh bounded only by resolver timeouts: don't wait for it.
    scheduler.abort();
    match server.await {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("error: HTTP server task: {err}");
            ExitCode::from(EXIT_FINDINGS)
        }
    }
}

async fn demo(args: DemoArgs) -> ExitCode {
    let lab = match crate::demo::Lab::start() {
        Ok(lab) => lab,
        Err(err) => {
            eprintln!("error: cannot start the demo's listeners on 127.0.0.11-17: {err}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let shown = match args.listen_address {
        ListenAddress::Any(port) => format!("localhost:{port}"),
        ListenAddress::At(address) => address.to_string(),
    };
    // Say where to look only once it is sure to be there.
    if let Err(err) = args.listen_address.bind().await {
        eprintln!("error: cannot listen on {}: {err}", args.listen_address);
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    print!("{}", lab.describe(&shown));
    let code = serve(ServeArgs {
        config_file: lab.config.clone(),
        listen_address: args.listen_address,
        enable_lifecycle: false,
        max_connections: 64,
        web_config_file: None,
    })
    .await;
    drop(lab);
    code
}

/// What `--web.config.file` asks for; without one, plain HTTP open to all.
fn load_security(path: Option<&Path>) -> Result<crate::http::Security, ConfigError> {
    match path {
        None => Ok(crate::http::Security::open()),
        Some(path) => crate::http::Security::build(&config::web::load_web(path)?),
    }
}

/// Every reload (SIGHUP, `POST /-/reload`) reads the web configuration again, then the
/// configuration; a bad web file keeps the running one and is the reload's error.
async fn reload_web_then_app(
    mut requests: mpsc::Receiver<app::ReloadRequest>,
    app_reloads: mpsc::Sender<app::ReloadRequest>,
    web_config_file: Option<PathBuf>,
    security: crate::http::SharedSecurity,
) {
    while let Some(reply) = requests.recv().await {
        // A burst is one reload: every waiting caller gets its outcome. Requests queue here, not
        // in the scheduler, which hears of them one at a time.
        let mut replies = vec![reply];
        while let Ok(more) = requests.try_recv() {
            replies.push(more);
        }
        let web = match load_security(web_config_file.as_deref()) {
            Ok(next) => {
                *security.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
                Ok(())
            }
            Err(err) => {
                tracing::error!(error = %err.summary(), "web configuration reload failed; keeping the running one");
                Err(err)
            }
        };
        let (app_reply, app_outcome) = tokio::sync::oneshot::channel();
        if app_reloads.send(app_reply).await.is_err() {
            return;
        }
        let outcome = web.and(app_outcome.await.unwrap_or(Ok(())));
        for reply in replies {
            let _ = reply.send(outcome.clone());
        }
    }
}

async fn forward_sighup(reloads: mpsc::Sender<app::ReloadRequest>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        let (reply, _outcome) = tokio::sync::oneshot::channel();
        if reloads.send(reply).await.is_err() {
            return;
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
