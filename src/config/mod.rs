//! Loads the daemon's configuration and the declared whitelist files it names, and turns them into
//! typed values. Every refusal names the file, the line and column, and the key, because the
//! people who write these files fix them from the message alone.

pub mod aerleon;
pub mod defaults;
pub mod published;
pub mod raw;
pub mod session;
pub mod ssh;
pub mod web;
pub mod whitelist;

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

pub use published::{ListLocation, PublishedSource};
pub use raw::RawConfig;
use raw::{AddressFamily, RawAerleon, RawAllow, RawTarget, RawWhitelist, RawWhitelistRef};
pub use raw::{CheckKind, ListFormat, RawProbes, ResolverSpec};

use crate::prefix::PrefixIndex;
use whitelist::{Entry, Whitelist};

/// A refused configuration or whitelist file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// Line and column, 1-based, where known.
    pub position: Option<(u64, u64)>,
    /// The key path (`targets[0].port`), where known.
    pub key: Option<String>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The offending lines with a caret, where known.
    pub snippet: Option<String>,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, key: Option<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            position: None,
            key,
            message: message.into(),
            snippet: None,
        }
    }

    pub(crate) fn at(file: &Path, location: &Location, key: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = Self::new(file, Some(key.into()), message);
        if location.line() > 0 {
            error.position = Some((location.line(), location.column()));
        }
        error
    }

    /// The one-line form: `file:line:col: key: message`.
    pub fn summary(&self) -> String {
        let mut out = self.file.display().to_string();
        if let Some((line, column)) = self.position {
            let _ = write!(out, ":{line}:{column}");
        }
        out.push_str(": ");
        if let Some(key) = &self.key {
            // A rule between keys names them in its message (`global.timeout (90s) must be ...`):
            // the prefix would say it twice.
            if !self.message.contains(&format!("{key} (")) {
                out.push_str(key);
                out.push_str(": ");
            }
        }
        out.push_str(&self.message);
        out
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Settings that apply to every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub interval: Duration,
    pub timeout: Duration,
    pub attempts: u32,
    pub retry_delay: Duration,
    pub concurrency: usize,
    pub per_target_concurrency: usize,
    /// Where the last good set of every published list, the SSH memory and the history are kept.
    pub state_dir: PathBuf,
    /// The history file is rotated when it grows by this much.
    pub history_max_bytes: u64,
    pub max_probe_addresses_per_prefix: u32,
    /// Whitelist entries shorter than these prefix lengths are broad.
    pub broad_entry_prefix: BroadEntryPrefix,
    pub diagnosis: Diagnosis,
}

/// `global.diagnosis`: raw-packet diagnosis of failing addresses (`probe::raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diagnosis {
    pub raw_probes: RawProbes,
    pub trace_interval: Duration,
    pub max_hops: u8,
    pub ttl_margin: u8,
}

impl Default for Diagnosis {
    fn default() -> Self {
        Self {
            raw_probes: RawProbes::Auto,
            trace_interval: defaults::TRACE_INTERVAL,
            max_hops: defaults::MAX_HOPS,
            ttl_margin: defaults::TTL_MARGIN,
        }
    }
}

/// The prefix lengths below which a whitelist entry is broad: kept, since a firewall that allows
/// that much is truthfully declared, but reported, since it hides every `missing` finding inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadEntryPrefix {
    pub ipv4: u8,
    pub ipv6: u8,
}

impl Default for BroadEntryPrefix {
    fn default() -> Self {
        Self {
            ipv4: defaults::BROAD_ENTRY_PREFIX_IPV4,
            ipv6: defaults::BROAD_ENTRY_PREFIX_IPV6,
        }
    }
}

impl BroadEntryPrefix {
    /// The length for `prefix`'s family.
    pub fn for_family(self, prefix: &IpNet) -> u8 {
        match prefix {
            IpNet::V4(_) => self.ipv4,
            IpNet::V6(_) => self.ipv6,
        }
    }

    /// Whether `prefix` is shorter than the length for its family.
    pub fn is_broad(self, prefix: &IpNet) -> bool {
        prefix.prefix_len() < self.for_family(prefix)
    }
}

impl Default for Global {
    fn default() -> Self {
        Self {
            interval: defaults::INTERVAL,
            timeout: defaults::TIMEOUT,
            attempts: defaults::ATTEMPTS,
            retry_delay: defaults::RETRY_DELAY,
            concurrency: defaults::CONCURRENCY,
            per_target_concurrency: defaults::PER_TARGET_CONCURRENCY,
            state_dir: PathBuf::from(defaults::STATE_DIR),
            history_max_bytes: u64::from(defaults::HISTORY_MAX_MIB) << 20,
            max_probe_addresses_per_prefix: defaults::MAX_PROBE_ADDRESSES_PER_PREFIX,
            broad_entry_prefix: BroadEntryPrefix::default(),
            diagnosis: Diagnosis::default(),
        }
    }
}

/// One audited service: a name, where its addresses come from, and the port to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub host: Option<String>,
    pub port: u16,
    pub check: CheckKind,
    pub resolvers: Vec<ResolverSpec>,
    pub ipv4: bool,
    pub ipv6: bool,
    pub dns_queries: u32,
    pub dns_retention: Duration,
    pub static_addresses: BTreeSet<IpAddr>,
    /// Whether loopback addresses from DNS or lists are probed (a tunnel, a lab) rather than
    /// reported as `bogus_address`.
    pub allow_local_addresses: bool,
    /// Attempts a client connecting by name makes: what the odds it succeeds are quoted for.
    pub client_attempts: u32,
    /// The vendor's published lists.
    pub published: Vec<PublishedSource>,
    /// Which `whitelist:` this target is audited against (its own, or `global.whitelist`), the
    /// [`Entry::source`](whitelist::Entry::source) of its entries. `None`: no whitelist is
    /// declared, and the audit only asks whether each published address is open.
    pub whitelist_source: Option<usize>,
    /// The SSH clients checked against every address and the host keys expected (`check: ssh`).
    pub ssh: ssh::SshPolicy,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub global: Global,
    pub targets: Vec<Target>,
    pub whitelist: Whitelist,
    /// Per target (same order): what its declared whitelist covers on its port, indexed.
    pub coverage: Vec<PrefixIndex>,
}

impl Config {
    /// Whether `other` says the same: what a reload compares (the coverage index follows from
    /// the whitelist).
    pub fn same_as(&self, other: &Self) -> bool {
        self.path == other.path
            && self.global == other.global
            && self.targets == other.targets
            && self.whitelist == other.whitelist
    }
}

/// Reads and validates a configuration file and every whitelist file it names, and warns of each
/// broad whitelist entry.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_bounded(path).map_err(|err| match err {
        ReadError::Io(err) => ConfigError::new(path, None, format!("cannot read `{}`: {err}", path.display())),
        ReadError::TooLarge => ConfigError::new(path, None, too_large_file()),
    })?;
    let raw: RawConfig = parse_yaml(path, &text)?;
    let config = build(path, &raw)?;
    warn_broad_entries(&config);
    Ok(config)
}

/// One log line per broad entry: the audit cannot see what such an entry hides, so the person
/// reading the logs must.
fn warn_broad_entries(config: &Config) {
    let lengths = config.global.broad_entry_prefix;
    for entry in config.whitelist.broad_entries() {
        let family = if entry.prefix.addr().is_ipv4() { "ipv4" } else { "ipv6" };
        let length = lengths.for_family(&entry.prefix);
        let location = format!("{}:{}", config.whitelist.files[entry.file].display(), entry.line);
        tracing::warn!(
            location = %location,
            entry = %entry.label(),
            "{location}: broad whitelist entry {}: shorter than /{length} (global.broad_entry_prefix.{family}), it covers every address inside it, so no vendor address there is ever reported missing; narrow it unless the firewall really allows that much",
            entry.label()
        );
    }
}

enum ReadError {
    Io(std::io::Error),
    TooLarge,
}

/// Reads a file of at most [`defaults::MAX_FILE_BYTES`]: a runaway or hostile file must not
/// take the auditor's memory.
fn read_bounded(path: &Path) -> Result<String, ReadError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut text = String::new();
    file.take(defaults::MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(ReadError::Io)?;
    if text.len() as u64 > defaults::MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(text)
}

fn too_large_file() -> String {
    format!(
        "the file is too large: more than {} MiB; whitelist-audit reads at most that much (a whitelist of 100,000 entries takes about 6 MiB)",
        defaults::MAX_FILE_BYTES / (1024 * 1024),
    )
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The parser's limits: large enough for a whitelist of 100,000 entries with room to spare,
/// bounded so that a hostile file cannot take unbounded memory or time.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: defaults::MAX_YAML_NODES,
            // Every event but a collection's end is a node: the node limit is always reached first.
            max_events: 2 * defaults::MAX_YAML_NODES + 16,
        },
        // Comments are never read: they need not cost events or memory.
        emit_comments: false,
    }
}

/// A budget refusal in words: serde-saphyr's own (`budget breached: Nodes { nodes: 250001 }`) means
/// nothing to the people who write these files.
fn budget_refusal(err: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::budget::BudgetBreach;
    let breach = match err {
        serde_saphyr::Error::Budget { breach, .. } => breach,
        serde_saphyr::Error::WithSnippet { error, .. } => return budget_refusal(error),
        _ => return None,
    };
    let limits = serde_saphyr::Budget::default();
    Some(match breach {
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => format!(
            "the file is too large: more than {} YAML nodes (keys, values and lists); whitelist-audit reads at most that many, about {} whitelist entries",
            thousands(defaults::MAX_YAML_NODES as u64),
            thousands(defaults::MAX_WHITELIST_ENTRIES as u64),
        ),
        BudgetBreach::ScalarBytes { .. } => format!(
            "the file is too large: more than {} MiB of text in its values",
            limits.max_total_scalar_bytes / (1024 * 1024)
        ),
        BudgetBreach::Depth { depth } => format!(
            "the file nests lists and mappings {depth} deep; whitelist-audit reads at most {} levels",
            limits.max_depth
        ),
        BudgetBreach::Aliases { .. }
        | BudgetBreach::Anchors { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::RecordedAnchorEvents { .. }
        | BudgetBreach::RecordedAnchorBytes { .. } => {
            "the file repeats YAML anchors (`*name`) more than whitelist-audit allows: write the values out".to_string()
        }
        BudgetBreach::Documents { .. } => "the file holds too many YAML documents: write one".to_string(),
        other => format!("the file exceeds whitelist-audit's YAML limits ({other:?})"),
    })
}

/// Parses YAML into `T`, turning serde-saphyr's error into one that also names the key path.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(path, None, "the file is empty"));
    }
    // Tracking the key path makes a large whitelist half again as slow to parse: only a file
    // already known to be bad is read a second time, with it, for the message.
    let first = match serde_saphyr::from_str_with_options(text, yaml_options()) {
        Ok(value) => return Ok(value),
        Err(err) => err,
    };
    if let Some(message) = budget_refusal(&first) {
        // Where the parser stopped says nothing about what to fix.
        return Err(ConfigError::new(path, None, message));
    }
    let mut key_path: Option<String> = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            key_path = Some(err.path().to_string());
            err.into_inner()
        })
    });
    result.map_err(|err| {
        let position = err.location().filter(|l| l.line() > 0).map(|l| (l.line(), l.column()));
        let bare = err.without_snippet().to_string();
        let message = match position {
            Some((line, column)) => bare
                .strip_suffix(&format!(" at line {line}, column {column}"))
                .unwrap_or(&bare)
                .to_string(),
            None => bare,
        };
        let rendered = err.to_string();
        let snippet = rendered
            .split_once('\n')
            .map(|(_, rest)| rest.replace("<input>", &path.display().to_string()))
            .filter(|rest| !rest.trim().is_empty());
        ConfigError {
            file: path.to_path_buf(),
            position,
            key: key_path
                .map(|k| k.replace(".value", "").trim_end_matches(".?").to_string())
                .filter(|k| k != "." && k != "?" && !k.is_empty()),
            message: message.replace(", set DuplicateKeyPolicy in Options if acceptable", ""),
            snippet,
        }
    })
}

/// Everything of `global` but its resolvers and whitelist: defaults filled in, each rule checked.
fn build_global(path: &Path, base: &Path, g: &raw::RawGlobal) -> Result<Global, ConfigError> {
    let interval = Setting::of(g.interval.as_ref(), "global.interval", defaults::INTERVAL);
    let timeout = Setting::of(g.timeout.as_ref(), "global.timeout", defaults::TIMEOUT);
    let retry_delay = Setting::of(g.retry_delay.as_ref(), "global.retry_delay", defaults::RETRY_DELAY);
    validate_interval(path, &interval)?;
    validate_timeout(path, &timeout, &interval)?;
    let attempts = g.attempts.map_or(defaults::ATTEMPTS, |n| n.0);
    validate_retry_delay(path, &retry_delay, &interval, attempts)?;
    let broad = g.broad_entry_prefix.as_ref();
    let diagnosis = build_diagnosis(path, g.diagnosis.as_ref())?;
    Ok(Global {
        interval: interval.value,
        timeout: timeout.value,
        attempts,
        retry_delay: retry_delay.value,
        concurrency: g.concurrency.map_or(defaults::CONCURRENCY, |n| n.0 as usize),
        per_target_concurrency: g
            .per_target_concurrency
            .map_or(defaults::PER_TARGET_CONCURRENCY, |n| n.0 as usize),
        state_dir: normalize(
            base,
            g.state_dir.as_deref().unwrap_or_else(|| Path::new(defaults::STATE_DIR)),
        ),
        history_max_bytes: u64::from(g.history_max_mib.map_or(defaults::HISTORY_MAX_MIB, |n| n.0)) << 20,
        max_probe_addresses_per_prefix: g
            .max_probe_addresses_per_prefix
            .map_or(defaults::MAX_PROBE_ADDRESSES_PER_PREFIX, |n| n.0),
        broad_entry_prefix: BroadEntryPrefix {
            ipv4: broad
                .and_then(|b| b.ipv4)
                .map_or(defaults::BROAD_ENTRY_PREFIX_IPV4, |n| n.0),
            ipv6: broad
                .and_then(|b| b.ipv6)
                .map_or(defaults::BROAD_ENTRY_PREFIX_IPV6, |n| n.0),
        },
        diagnosis,
    })
}

fn build_diagnosis(path: &Path, raw: Option<&raw::RawDiagnosis>) -> Result<Diagnosis, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Diagnosis::default());
    };
    let trace_interval = Setting::of(
        raw.trace_interval.as_ref(),
        "global.diagnosis.trace_interval",
        defaults::TRACE_INTERVAL,
    );
    if trace_interval.value < defaults::TRACE_INTERVAL_MIN {
        return Err(trace_interval.refuse(
            path,
            None,
            format!(
                "{} must be at least {}: a trace is dozens of packets, and tracing more often is scanning",
                trace_interval.named(),
                show_duration(defaults::TRACE_INTERVAL_MIN)
            ),
        ));
    }
    Ok(Diagnosis {
        raw_probes: raw.raw_probes.unwrap_or(RawProbes::Auto),
        trace_interval: trace_interval.value,
        max_hops: raw.max_hops.map_or(defaults::MAX_HOPS, |n| n.0),
        ttl_margin: raw.ttl_margin.map_or(defaults::TTL_MARGIN, |n| n.0),
    })
}

/// Validates a parsed configuration and loads the whitelist files it names.
pub fn build(path: &Path, raw: &RawConfig) -> Result<Config, ConfigError> {
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let g = &raw.global;
    let global = build_global(path, base, g)?;
    let global_resolvers =
        resolvers(path, g.resolvers.as_ref(), "global.resolvers")?.unwrap_or_else(|| vec![ResolverSpec::System]);

    if raw.targets.is_empty() {
        return Err(ConfigError::new(
            path,
            Some("targets".into()),
            "no targets: list at least one",
        ));
    }

    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut targets = Vec::with_capacity(raw.targets.len());
    let mut sources: Vec<Source<'_>> = Vec::new();
    let mut global_source: Option<usize> = None;
    let global_whitelist = g.whitelist.as_ref();

    for (index, t) in raw.targets.iter().enumerate() {
        let key = format!("targets[{index}]");
        let name = t.name.value.trim().to_string();
        validate_target_name(path, &t.name.referenced, &format!("{key}.name"), &name)?;
        if let Some(first_line) = seen.insert(name.clone(), t.name.referenced.line()) {
            return Err(ConfigError::at(
                path,
                &t.name.referenced,
                format!("{key}.name"),
                format!(
                    "duplicate target name `{name}` (first defined at line {first_line}): names must be unique, they become the `target` label"
                ),
            ));
        }
        let mut target = build_target(path, &key, t, &name, &global_resolvers)?;
        let source = match (&t.whitelist, global_whitelist) {
            (Some(own), _) => Some(Source::add(
                &mut sources,
                base,
                format!("{key}.whitelist"),
                own,
                Some(&name),
            )),
            (None, Some(global)) => Some(
                *global_source
                    .get_or_insert_with(|| Source::add(&mut sources, base, "global.whitelist".into(), global, None)),
            ),
            (None, None) => None,
        };
        if let Some(source) = source {
            sources[source].ports.push(target.port);
        }
        target.whitelist_source = source;
        targets.push(target);
    }
    if let (Some(global), None) = (global_whitelist, global_source) {
        Source::add(&mut sources, base, "global.whitelist".into(), global, None);
    }

    let names: BTreeSet<String> = targets.iter().map(|t| t.name.clone()).collect();
    let (files, entries) = load_whitelists(path, base, &sources, &names, global.broad_entry_prefix)?;
    let whitelist = Whitelist::new(files, entries);
    let coverage = targets.iter().map(|t| whitelist.coverage(t)).collect();
    Ok(Config {
        path: path.to_path_buf(),
        global,
        targets,
        whitelist,
        coverage,
    })
}

/// One `whitelist:` of the configuration: a whitelist file, or tokens of the firewall team's
/// aerleon definitions. Targets audited against the same one share it.
struct Source<'a> {
    /// The key that named it first, and where.
    key: String,
    location: Location,
    kind: SourceKind<'a>,
    /// The targets whose own whitelist it is.
    owners: Vec<String>,
    /// The ports of the targets audited against it.
    ports: Vec<u16>,
}

enum SourceKind<'a> {
    File(PathBuf),
    Aerleon(&'a RawAerleon),
}

impl<'a> Source<'a> {
    /// The index of the source `written` names, added if new. A file named twice is one source
    /// (as before); each aerleon mapping is its own.
    fn add(
        sources: &mut Vec<Source<'a>>,
        base: &Path,
        key: String,
        written: &'a Spanned<RawWhitelistRef>,
        owner: Option<&str>,
    ) -> usize {
        let kind = match &written.value {
            RawWhitelistRef::File(file) => SourceKind::File(normalize(base, file)),
            RawWhitelistRef::Aerleon(spec) => SourceKind::Aerleon(spec),
        };
        let existing = match &kind {
            SourceKind::File(file) => sources
                .iter()
                .position(|s| matches!(&s.kind, SourceKind::File(f) if f == file)),
            SourceKind::Aerleon(_) => None,
        };
        let slot = existing.unwrap_or_else(|| {
            sources.push(Source {
                key,
                location: written.referenced,
                kind,
                owners: Vec::new(),
                ports: Vec::new(),
            });
            sources.len() - 1
        });
        if let Some(owner) = owner {
            sources[slot].owners.push(owner.to_string());
        }
        slot
    }
}

/// Reads every whitelist source and turns it into [`Entry`] values; returns the files they were
/// written in and the entries. A file that cannot be read is reported at the key that named it.
fn load_whitelists(
    path: &Path,
    base: &Path,
    sources: &[Source<'_>],
    names: &BTreeSet<String>,
    broad: BroadEntryPrefix,
) -> Result<(Vec<PathBuf>, Vec<Entry>), ConfigError> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut entries = Vec::new();
    for (source_index, source) in sources.iter().enumerate() {
        match &source.kind {
            SourceKind::File(file) => {
                let text = read_bounded(file).map_err(|err| match err {
                    ReadError::Io(err) => ConfigError::at(
                        path,
                        &source.location,
                        source.key.clone(),
                        format!("cannot read whitelist `{}`: {err}", file.display()),
                    ),
                    ReadError::TooLarge => ConfigError::new(file, None, too_large_file()),
                })?;
                let parsed: RawWhitelist = parse_yaml(file, &text)?;
                let file_index = register_file(&mut files, file);
                for (i, allow) in parsed.allow.iter().enumerate() {
                    let at = EntryPlace {
                        file,
                        file_index,
                        source: source_index,
                    };
                    entries.extend(build_entries(&at, i, allow, &source.owners, names, broad)?);
                }
            }
            SourceKind::Aerleon(spec) => {
                entries.extend(aerleon_entries(
                    path,
                    base,
                    source,
                    source_index,
                    spec,
                    &mut files,
                    broad,
                )?);
            }
        }
    }
    Ok((files, entries))
}

/// The index of `file` in `files`, added if new.
fn register_file(files: &mut Vec<PathBuf>, file: &Path) -> usize {
    files.iter().position(|f| f == file).unwrap_or_else(|| {
        files.push(file.to_path_buf());
        files.len() - 1
    })
}

/// The entries of a `whitelist: {aerleon: DIR, tokens: [...]}`: every address its tokens resolve
/// to, once, on its `ports` or the ports of the targets audited against it.
fn aerleon_entries(
    path: &Path,
    base: &Path,
    source: &Source<'_>,
    source_index: usize,
    spec: &RawAerleon,
    files: &mut Vec<PathBuf>,
    broad: BroadEntryPrefix,
) -> Result<Vec<Entry>, ConfigError> {
    let key = &source.key;
    if spec.tokens.value.is_empty() {
        return Err(ConfigError::at(
            path,
            &spec.tokens.referenced,
            format!("{key}.tokens"),
            "empty list: name at least one network token",
        ));
    }
    let mut ports: Vec<u16> = match &spec.ports {
        Some(ports) if ports.value.is_empty() => {
            return Err(ConfigError::at(
                path,
                &ports.referenced,
                format!("{key}.ports"),
                "empty list: name at least one port",
            ));
        }
        Some(ports) => ports.value.iter().map(|p| p.0).collect(),
        None => {
            let mut ports = source.ports.clone();
            ports.sort_unstable();
            ports.dedup();
            if ports.len() > 1 {
                // A token written for SFTP would otherwise also "cover" an FTPS target.
                return Err(ConfigError::at(
                    path,
                    &source.location,
                    key.clone(),
                    format!(
                        "targets on ports {} use this aerleon whitelist: say which ports its tokens are for with `ports: [...]`",
                        ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            ports
        }
    };
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Err(ConfigError::at(
            path,
            &source.location,
            key.clone(),
            "no target is audited against this whitelist (each has its own), so its addresses have no port: name them with `ports: [22]`",
        ));
    }
    let dir = normalize(base, &spec.aerleon.value);
    let definitions = read_aerleon_dir(path, &format!("{key}.aerleon"), &spec.aerleon.referenced, &dir)?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: std::collections::HashSet<IpNet> = std::collections::HashSet::new();
    for (i, token) in spec.tokens.value.iter().enumerate() {
        let name = token.value.trim();
        if !definitions.contains(name) {
            return Err(ConfigError::at(
                path,
                &token.referenced,
                format!("{key}.tokens[{i}]"),
                format!(
                    "unknown token `{name}`: no definition file in `{}` defines it ({} tokens there)",
                    dir.display(),
                    definitions.len()
                ),
            ));
        }
        for resolved in definitions.resolve(name)? {
            if !seen.insert(resolved.prefix) {
                continue;
            }
            entries.push(Entry {
                prefix: resolved.prefix,
                broad: broad.is_broad(&resolved.prefix),
                ports: ports.clone(),
                belongs_to: source.owners.clone(),
                tagged: None,
                comment: Some(match resolved.comment {
                    Some(comment) => format!("{}: {comment}", resolved.via),
                    None => resolved.via,
                }),
                file: register_file(files, &resolved.file),
                source: source_index,
                line: resolved.line,
            });
        }
    }
    Ok(entries)
}

/// Reads the definition files of an aerleon directory as aerleon does: every `*.net` and every
/// `*.yaml`/`*.yml` with `networks:` directly in it (not below), in name order. `.svc` files and
/// YAML `services:` are service definitions, not addresses.
fn read_aerleon_dir(
    path: &Path,
    key: &str,
    location: &Location,
    dir: &Path,
) -> Result<aerleon::Definitions, ConfigError> {
    let cannot = |err: std::io::Error| {
        ConfigError::at(
            path,
            location,
            key,
            format!("cannot read aerleon definitions directory `{}`: {err}", dir.display()),
        )
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir_entry in std::fs::read_dir(dir).map_err(cannot)? {
        let file = dir_entry.map_err(cannot)?.path();
        let wanted = matches!(file.extension().and_then(|e| e.to_str()), Some("net" | "yaml" | "yml"));
        if wanted && file.is_file() {
            candidates.push(file);
        }
    }
    candidates.sort();
    let mut parsed = Vec::new();
    for file in candidates {
        let text = read_bounded(&file).map_err(|err| match err {
            ReadError::Io(err) => ConfigError::new(&file, None, format!("cannot read `{}`: {err}", file.display())),
            ReadError::TooLarge => ConfigError::new(&file, None, too_large_file()),
        })?;
        if file.extension().is_some_and(|e| e == "net") {
            parsed.push(aerleon::parse_net(&file, &text)?);
        } else if let Some(definitions) = aerleon::parse_yaml_networks(&file, &text)? {
            parsed.push(definitions);
        }
    }
    if parsed.is_empty() {
        return Err(ConfigError::at(
            path,
            location,
            key,
            format!(
                "`{}` holds no aerleon network definitions: no `*.net` file and no YAML file with `networks:`",
                dir.display()
            ),
        ));
    }
    aerleon::Definitions::new(parsed)
}

fn normalize(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// A duration of `global` as its checks see it: where it was written, if it was.
struct Setting<'a> {
    key: &'static str,
    value: Duration,
    written_at: Option<&'a Location>,
}

impl<'a> Setting<'a> {
    fn of(value: Option<&'a Spanned<raw::HumanDuration>>, key: &'static str, default: Duration) -> Self {
        Self {
            key,
            value: value.map_or(default, |v| v.value.0),
            written_at: value.map(|v| &v.referenced),
        }
    }

    /// `global.timeout (90s)`, or `global.timeout (10s, the default)`.
    fn named(&self) -> String {
        let value = show_duration(self.value);
        match self.written_at {
            Some(_) => format!("{} ({value})", self.key),
            None => format!("{} ({value}, the default)", self.key),
        }
    }

    /// A refusal of this setting (or, when it was not written, of `other`, which was).
    fn refuse(&self, file: &Path, other: Option<&Setting<'_>>, message: String) -> ConfigError {
        let blamed = match (self.written_at, other) {
            (None, Some(other)) if other.written_at.is_some() => other,
            _ => self,
        };
        match blamed.written_at {
            Some(location) => ConfigError::at(file, location, blamed.key, message),
            None => ConfigError::new(file, Some(blamed.key.to_string()), message),
        }
    }
}

/// A duration as a person writes it: `500ms`, `90s`, `5m`, `24h`.
fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 {
        return match secs {
            0 => "0s".into(),
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s >= 120 && s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
    }
    if secs == 0 && d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ms", d.subsec_millis());
    }
    humantime::format_duration(d).to_string()
}

fn validate_interval(file: &Path, interval: &Setting<'_>) -> Result<(), ConfigError> {
    let (min, max) = (defaults::INTERVAL_MIN, defaults::INTERVAL_MAX);
    let why = if interval.value < min {
        "every address is probed once per interval, and more than one connection a second to each vendor address floods its server"
    } else if interval.value > max {
        "every address is probed once per interval, and a longer one leaves a closed or new address unseen for more than a day"
    } else {
        return Ok(());
    };
    Err(interval.refuse(
        file,
        None,
        format!(
            "{} must be from {} to {}: {why}",
            interval.named(),
            show_duration(min),
            show_duration(max)
        ),
    ))
}

fn validate_timeout(file: &Path, timeout: &Setting<'_>, interval: &Setting<'_>) -> Result<(), ConfigError> {
    let (min, max) = (defaults::TIMEOUT_MIN, defaults::TIMEOUT_MAX);
    let why = if timeout.value < min {
        "a shorter one reports a distant but healthy server as a timeout"
    } else if timeout.value > max {
        "a server that has not answered in a minute is not answering, and a longer wait only holds a probe slot"
    } else if timeout.value >= interval.value {
        return Err(timeout.refuse(
            file,
            Some(interval),
            format!(
                "{} must be shorter than {}: a probe would still run when the next one starts",
                timeout.named(),
                interval.named()
            ),
        ));
    } else {
        return Ok(());
    };
    Err(timeout.refuse(
        file,
        None,
        format!(
            "{} must be from {} to {}: {why}",
            timeout.named(),
            show_duration(min),
            show_duration(max)
        ),
    ))
}

fn validate_retry_delay(
    file: &Path,
    retry_delay: &Setting<'_>,
    interval: &Setting<'_>,
    attempts: u32,
) -> Result<(), ConfigError> {
    // With one attempt there is no retry to wait for.
    if retry_delay.value <= interval.value || attempts == 1 {
        return Ok(());
    }
    Err(retry_delay.refuse(
        file,
        Some(interval),
        format!(
            "{} must be at most {}: a retry would wait past the next probe of the same address",
            retry_delay.named(),
            interval.named()
        ),
    ))
}

/// Longest target name: it is the `target` label and a column of `check`'s table.
const MAX_TARGET_NAME_CHARS: usize = 128;

fn validate_target_name(file: &Path, location: &Location, key: &str, name: &str) -> Result<(), ConfigError> {
    let refuse = |message: String| Err(ConfigError::at(file, location, key, message));
    if name.is_empty() {
        return refuse("a target needs a non-empty name".into());
    }
    if name.chars().any(char::is_control) {
        return refuse(format!(
            "target name `{}` contains a control character (a newline, a tab, ...): it becomes the `target` label and a column of `check`'s table, which must stay on one line",
            name.escape_debug()
        ));
    }
    let length = name.chars().count();
    if length > MAX_TARGET_NAME_CHARS {
        let start: String = name.chars().take(24).collect();
        return refuse(format!(
            "target name `{start}...` is {length} characters long: write at most {MAX_TARGET_NAME_CHARS}, it becomes the `target` label and a column of `check`'s table"
        ));
    }
    Ok(())
}

fn resolvers(
    file: &Path,
    value: Option<&Spanned<Vec<ResolverSpec>>>,
    key: &str,
) -> Result<Option<Vec<ResolverSpec>>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) if v.value.is_empty() => Err(ConfigError::at(
            file,
            &v.referenced,
            key,
            "empty list: name at least one resolver (`system` for resolv.conf)",
        )),
        Some(v) => {
            // Every duplicate, not only adjacent ones: a resolver listed twice would be asked twice.
            let mut list: Vec<ResolverSpec> = Vec::with_capacity(v.value.len());
            for resolver in &v.value {
                if !list.contains(resolver) {
                    list.push(*resolver);
                }
            }
            Ok(Some(list))
        }
    }
}

fn build_target(
    file: &Path,
    key: &str,
    t: &RawTarget,
    name: &str,
    global_resolvers: &[ResolverSpec],
) -> Result<Target, ConfigError> {
    let host = match &t.host {
        None => None,
        Some(h) => {
            let text = h.value.trim().trim_end_matches('.').to_string();
            let at = |message: String| ConfigError::at(file, &h.referenced, format!("{key}.host"), message);
            if text.is_empty() {
                return Err(at("empty host name".into()));
            }
            if text.parse::<IpAddr>().is_ok() {
                return Err(at(format!(
                    "`{text}` is an address, not a host name: list it under `static`"
                )));
            }
            if text
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
            {
                return Err(at(format!("`{text}` is not a valid host name")));
            }
            Some(text)
        }
    };
    let static_addresses: BTreeSet<IpAddr> = t.static_addresses.iter().flatten().map(|a| a.0).collect();
    let published = t
        .published
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, entry)| published::build(file, &format!("{key}.published[{i}]"), entry))
        .collect::<Result<Vec<_>, _>>()?;
    validate_distinct_lists(file, key, t, &published)?;
    if host.is_none() && static_addresses.is_empty() && published.is_empty() {
        return Err(ConfigError::at(
            file,
            &t.name.referenced,
            key,
            format!("target `{name}` has no addresses: set `host`, `static` or `published`"),
        ));
    }
    let (ipv4, ipv6) = match &t.address_families {
        None => (true, true),
        Some(families) if families.value.is_empty() => {
            return Err(ConfigError::at(
                file,
                &families.referenced,
                format!("{key}.address_families"),
                "empty list: use [ipv4], [ipv6] or [ipv4, ipv6]",
            ));
        }
        Some(families) => (
            families.value.contains(&AddressFamily::Ipv4),
            families.value.contains(&AddressFamily::Ipv6),
        ),
    };
    // RFC 6761: `localhost` names are loopback by definition, never a sinkhole.
    let allow_local_addresses = t.allow_local_addresses.unwrap_or_else(|| {
        host.as_deref().is_some_and(|h| {
            let h = h.to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        })
    });
    Ok(Target {
        name: name.to_string(),
        host,
        port: t.port.map_or(defaults::PORT, |p| p.0),
        check: t.check.unwrap_or(CheckKind::Ssh),
        resolvers: resolvers(file, t.resolvers.as_ref(), &format!("{key}.resolvers"))?
            .unwrap_or_else(|| global_resolvers.to_vec()),
        ipv4,
        ipv6,
        dns_queries: t.dns_queries.map_or(defaults::DNS_QUERIES, |n| n.0),
        dns_retention: t.dns_retention.map_or(defaults::DNS_RETENTION, |d| d.0),
        static_addresses,
        allow_local_addresses,
        client_attempts: t.client_attempts.map_or(defaults::CLIENT_ATTEMPTS, |n| n.0),
        published,
        whitelist_source: None,
        ssh: ssh::build(file, key, t.check.unwrap_or(CheckKind::Ssh), t.ssh.as_ref())?,
    })
}

/// One list per URL and target: two would share a state file, a reload could not tell them
/// apart, and their series would collide.
fn validate_distinct_lists(
    file: &Path,
    key: &str,
    t: &RawTarget,
    published: &[PublishedSource],
) -> Result<(), ConfigError> {
    let raw: Vec<_> = t.published.iter().flatten().collect();
    for (i, list) in published.iter().enumerate() {
        if let Some(first) = published[..i].iter().position(|earlier| earlier.label == list.label) {
            return Err(ConfigError::at(
                file,
                &raw[i].referenced,
                format!("{key}.published[{i}]"),
                format!(
                    "`{}` is already listed at line {}: one list per URL; to take several parts of one document, select them together, e.g. `$['ipv4','ipv6'][*]`",
                    list.label,
                    raw[first].referenced.line()
                ),
            ));
        }
    }
    Ok(())
}

/// Where the entries of one whitelist file come from.
struct EntryPlace<'a> {
    file: &'a Path,
    file_index: usize,
    source: usize,
}

fn build_entries(
    place: &EntryPlace<'_>,
    index: usize,
    allow: &RawAllow,
    owners: &[String],
    names: &BTreeSet<String>,
    broad: BroadEntryPrefix,
) -> Result<Vec<Entry>, ConfigError> {
    let file = place.file;
    let key = format!("allow[{index}]");
    if allow.addresses.value.is_empty() {
        return Err(ConfigError::at(
            file,
            &allow.addresses.referenced,
            format!("{key}.addresses"),
            "empty list: name at least one address or CIDR",
        ));
    }
    if allow.ports.value.is_empty() {
        return Err(ConfigError::at(
            file,
            &allow.ports.referenced,
            format!("{key}.ports"),
            "empty list: name at least one port",
        ));
    }
    let belongs_to: Vec<String> = match &allow.target {
        Some(tag) => {
            let tag_name = tag.value.trim();
            if !names.contains(tag_name) {
                let known: Vec<&str> = names.iter().map(String::as_str).collect();
                return Err(ConfigError::at(
                    file,
                    &tag.referenced,
                    format!("{key}.target"),
                    format!("unknown target `{tag_name}` (targets: {})", known.join(", ")),
                ));
            }
            if !owners.is_empty() && !owners.iter().any(|o| o == tag_name) {
                return Err(ConfigError::at(
                    file,
                    &tag.referenced,
                    format!("{key}.target"),
                    format!(
                        "this file is the own whitelist of {}; an entry here cannot belong to `{tag_name}`",
                        owners.join(", ")
                    ),
                ));
            }
            vec![tag_name.to_string()]
        }
        None => owners.to_vec(),
    };
    let mut ports: Vec<u16> = allow.ports.value.iter().map(|p| p.0).collect();
    ports.sort_unstable();
    ports.dedup();
    Ok(allow
        .addresses
        .value
        .iter()
        .map(|address| Entry {
            prefix: address.value.0,
            broad: broad.is_broad(&address.value.0),
            ports: ports.clone(),
            belongs_to: belongs_to.clone(),
            tagged: allow.target.as_ref().map(|t| t.value.trim().to_string()),
            comment: allow.comment.clone(),
            file: place.file_index,
            source: place.source,
            line: address.referenced.line(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{budget_refusal, show_duration, thousands};

    #[test]
    fn durations_are_shown_as_people_write_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_millis(50), "50ms"),
            (Duration::from_millis(1500), "1s 500ms"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(172_800), "48h"),
        ];
        for (duration, shown) in cases {
            assert_eq!(show_duration(duration), shown);
        }
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(2_200_000), "2,200,000");
    }

    #[test]
    fn every_budget_refusal_is_worded_for_people() {
        let parse = |yaml: &str, budget: serde_saphyr::Budget| {
            let options = serde_saphyr::options! { budget: Some(budget) };
            serde_saphyr::from_str_with_options::<serde::de::IgnoredAny>(yaml, options).unwrap_err()
        };
        let small = |f: fn(&mut serde_saphyr::Budget)| {
            let mut budget = serde_saphyr::Budget::default();
            f(&mut budget);
            budget
        };
        let nodes = parse("[1, 2, 3]", small(|b| b.max_nodes = 2));
        assert!(
            budget_refusal(&nodes)
                .unwrap()
                .starts_with("the file is too large: more than 2,200,000 YAML nodes")
        );
        let depth = parse("[[[[1]]]]", small(|b| b.max_depth = 2));
        assert!(
            budget_refusal(&depth)
                .unwrap()
                .starts_with("the file nests lists and mappings")
        );
        let aliases = parse("a: &x 1\nb: [*x, *x, *x]", small(|b| b.max_aliases = 1));
        assert!(
            budget_refusal(&aliases)
                .unwrap()
                .starts_with("the file repeats YAML anchors")
        );
        let syntax = super::parse_yaml::<serde::de::IgnoredAny>(Path::new("x.yml"), "a: [").unwrap_err();
        assert!(!syntax.message.contains("too large"), "not a budget refusal");
    }
}
