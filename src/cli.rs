//! The command line: `serve`, `check` and `validate`. Exit codes are a contract: 0 clean, 1 findings
//! (or a failed source) in `check`, 2 bad input.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;

use crate::app::{self, Shared};
use crate::config::{self, CheckKind, Config, ConfigError, ResolverSpec, defaults};
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
  whitelist-audit check --host sftp.vendor.example                  are all its addresses reachable from here?
  whitelist-audit check --host sftp.vendor.example --whitelist whitelist.yml --resolver 192.0.2.53
  whitelist-audit validate --config.file config.yml
  whitelist-audit serve --config.file config.yml                    metrics on :10022/metrics

Exit codes: 0 clean, 1 findings (check), 2 bad configuration, whitelist or flags."
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
    /// Run the daemon: probe every address each interval and serve /metrics.
    Serve(ServeArgs),
    /// One refresh and one sweep, then a table (or JSON); exit 0 clean, 1 findings, 2 bad input.
    Check(CheckArgs),
    /// Check the configuration and whitelist files; exit 0 or 2.
    Validate(ValidateArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: PathBuf,
    /// Address to serve /metrics, /-/healthy, /-/ready and /-/reload on.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value = defaults::LISTEN_ADDRESS)]
    pub listen_address: SocketAddr,
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
#[command(group = clap::ArgGroup::new("source").required(true).args(["config_file", "host"]))]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Check this host name without a configuration file.
    #[arg(long, value_name = "NAME", conflicts_with = "config_file")]
    pub host: Option<String>,
    /// With --host: the port to probe.
    #[arg(long, value_name = "N", default_value_t = defaults::PORT, requires = "host", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// With --host: the declared whitelist to diff against. Without it, every published address
    /// is expected to be open and only `blocked` is reported.
    #[arg(long, value_name = "FILE", requires = "host")]
    pub whitelist: Option<PathBuf>,
    /// With --host: a resolver, `system`, IP, IP:PORT or [IPv6]:PORT; repeat for several.
    #[arg(long, value_name = "ADDR", requires = "host", value_parser = ResolverSpec::parse)]
    pub resolver: Vec<ResolverSpec>,
    /// With --host: what to check on top of the TCP handshake.
    #[arg(long, value_parser = check_kinds(), default_value = "ssh", requires = "host")]
    pub check: CheckKind,
    /// With --host: one attempt's timeout.
    #[arg(long, value_name = "DURATION", requires = "host", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// With --host: attempts per address.
    #[arg(long, value_name = "N", requires = "host", value_parser = clap::value_parser!(u32).range(1..))]
    pub attempts: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
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
        Command::Serve(args) => serve(args).await,
    }
}

fn bad_input(err: &ConfigError) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(EXIT_BAD_INPUT)
}

async fn check(args: CheckArgs) -> ExitCode {
    let loaded = match (&args.config_file, &args.host) {
        (Some(file), _) => config::load(file),
        (None, Some(host)) => config_from_flags(host, &args),
        (None, None) => unreachable!("clap requires --config.file or --host"),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(err) => return bad_input(&err),
    };
    let snapshot = app::check_once(config, Arc::new(Os)).await;
    let report = &snapshot.report;
    match args.output {
        OutputFormat::Table => print!("{}", output::table(report)),
        OutputFormat::Json => print!("{}", output::json(report)),
    }
    if output::Summary::of(report).is_clean() {
        ExitCode::from(EXIT_OK)
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

/// Builds a one-target configuration from `check --host` flags, through the same loader as a
/// file, so the same validation applies.
fn config_from_flags(host: &str, args: &CheckArgs) -> Result<Config, ConfigError> {
    let quote = |s: &str| serde_json::to_string(s).expect("string serializes");
    let mut yaml = String::from("global:\n");
    if let Some(timeout) = args.timeout {
        let _ = writeln!(
            yaml,
            "  timeout: {}",
            quote(&humantime::format_duration(timeout).to_string())
        );
    }
    if let Some(attempts) = args.attempts {
        let _ = writeln!(yaml, "  attempts: {attempts}");
    }
    if let Some(whitelist) = &args.whitelist {
        let _ = writeln!(yaml, "  whitelist: {}", quote(&whitelist.to_string_lossy()));
    }
    if !args.resolver.is_empty() {
        let list: Vec<String> = args.resolver.iter().map(|r| quote(&r.to_string())).collect();
        let _ = writeln!(yaml, "  resolvers: [{}]", list.join(", "));
    }
    let _ = writeln!(
        yaml,
        "targets:\n  - name: {name}\n    host: {name}\n    port: {port}\n    check: {check}",
        name = quote(host),
        port = args.port,
        check = args.check.as_label(),
    );
    let origin = Path::new("--host");
    let raw = config::parse_yaml(origin, &yaml)?;
    config::build(origin, &raw)
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match config::load(&args.config_file) {
        Ok(config) => Arc::new(config),
        Err(err) => return bad_input(&err),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen_address).await {
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
    let shared = Shared::new(config);
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let router = crate::http::router(shared.subscribe(), reload_tx.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_http = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop_http.wait_for(|stop| *stop).await;
            })
            .await
    });
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
        Ok(Ok(())) => ExitCode::from(EXIT_OK),
        Ok(Err(err)) => {
            eprintln!("error: HTTP server: {err}");
            ExitCode::from(EXIT_FINDINGS)
        }
        Err(err) => {
            eprintln!("error: HTTP server task: {err}");
            ExitCode::from(EXIT_FINDINGS)
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
