//! Loads the daemon's configuration and the declared whitelist files it names, and turns them into
//! typed values. Every refusal names the file, the line and column, and the key, because the
//! people who write these files fix them from the message alone.

pub mod defaults;
pub mod published;
pub mod raw;
pub mod whitelist;

use std::collections::{BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};

pub use published::{ListLocation, PublishedSource};
pub use raw::RawConfig;
use raw::{AddressFamily, RawAllow, RawTarget, RawWhitelist};
pub use raw::{CheckKind, ListFormat, ResolverSpec};

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
    fn new(file: &Path, key: Option<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            position: None,
            key,
            message: message.into(),
            snippet: None,
        }
    }

    fn at(file: &Path, location: &Location, key: impl Into<String>, message: impl Into<String>) -> Self {
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
            out.push_str(key);
            out.push_str(": ");
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
    /// Where the last good set of every published list is kept.
    pub state_dir: PathBuf,
    pub max_probe_addresses_per_prefix: u32,
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
            max_probe_addresses_per_prefix: defaults::MAX_PROBE_ADDRESSES_PER_PREFIX,
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
    /// The vendor's published lists.
    pub published: Vec<PublishedSource>,
    /// Index into [`Whitelist::files`] of the file this target is audited against. `None`: no
    /// whitelist is declared, and the audit only asks whether each published address is open.
    pub whitelist_file: Option<usize>,
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

/// Reads and validates a configuration file and every whitelist file it names.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path, None)?;
    let raw: RawConfig = parse_yaml(path, &text)?;
    build(path, &raw)
}

fn read(path: &Path, named_at: Option<(&Path, &Location, &str)>) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|err| {
        let message = format!("cannot read `{}`: {err}", path.display());
        match named_at {
            Some((file, location, key)) => ConfigError::at(file, location, key, message),
            None => ConfigError::new(path, None, message),
        }
    })
}

/// Parses YAML into `T`, turning serde-saphyr's error into one that also names the key path.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(path, None, "the file is empty"));
    }
    let mut key_path: Option<String> = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
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

/// Validates a parsed configuration and loads the whitelist files it names.
pub fn build(path: &Path, raw: &RawConfig) -> Result<Config, ConfigError> {
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let g = &raw.global;
    let global = Global {
        interval: nonzero_duration(path, g.interval.as_ref(), "global.interval", defaults::INTERVAL)?,
        timeout: nonzero_duration(path, g.timeout.as_ref(), "global.timeout", defaults::TIMEOUT)?,
        attempts: g.attempts.map_or(defaults::ATTEMPTS, |n| n.0),
        retry_delay: g.retry_delay.map_or(defaults::RETRY_DELAY, |d| d.0),
        concurrency: g.concurrency.map_or(defaults::CONCURRENCY, |n| n.0 as usize),
        per_target_concurrency: g
            .per_target_concurrency
            .map_or(defaults::PER_TARGET_CONCURRENCY, |n| n.0 as usize),
        state_dir: normalize(
            base,
            g.state_dir.as_deref().unwrap_or_else(|| Path::new(defaults::STATE_DIR)),
        ),
        max_probe_addresses_per_prefix: g
            .max_probe_addresses_per_prefix
            .map_or(defaults::MAX_PROBE_ADDRESSES_PER_PREFIX, |n| n.0),
    };
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
    let mut whitelist_files: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let global_whitelist = g.whitelist.as_ref().map(|p| {
        (
            normalize(base, &p.value),
            ("global.whitelist".to_string(), p.referenced),
        )
    });

    for (index, t) in raw.targets.iter().enumerate() {
        let key = format!("targets[{index}]");
        let name = t.name.value.trim().to_string();
        if name.is_empty() {
            return Err(ConfigError::at(
                path,
                &t.name.referenced,
                format!("{key}.name"),
                "a target needs a non-empty name",
            ));
        }
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
        let target = build_target(path, &key, t, &name, &global_resolvers)?;
        let whitelist_path = t.whitelist.as_ref().map(|p| normalize(base, &p.value));
        match (&whitelist_path, &global_whitelist) {
            (Some(own), _) => register(&mut whitelist_files, own, Some(&name)),
            (None, Some((global, _))) => register(&mut whitelist_files, global, None),
            (None, None) => {}
        }
        targets.push((target, whitelist_path));
    }
    if let Some((global, _)) = &global_whitelist {
        register(&mut whitelist_files, global, None);
    }

    let names: BTreeSet<String> = targets.iter().map(|(t, _)| t.name.clone()).collect();
    let entries = load_whitelists(path, base, raw, &whitelist_files, global_whitelist.as_ref(), &names)?;

    let targets: Vec<Target> = targets
        .into_iter()
        .map(|(mut target, own)| {
            let file = own.or_else(|| global_whitelist.as_ref().map(|(g, _)| g.clone()));
            target.whitelist_file = file.and_then(|f| whitelist_files.iter().position(|(w, _)| *w == f));
            target
        })
        .collect();
    let whitelist = Whitelist::new(whitelist_files.into_iter().map(|(file, _)| file).collect(), entries);
    let coverage = targets.iter().map(|t| whitelist.coverage(t)).collect();
    Ok(Config {
        path: path.to_path_buf(),
        global,
        targets,
        whitelist,
        coverage,
    })
}

/// Reads every whitelist file and turns its `allow` entries into [`Entry`] values. A file that
/// cannot be read is reported at the key that named it.
fn load_whitelists(
    path: &Path,
    base: &Path,
    raw: &RawConfig,
    whitelist_files: &[(PathBuf, Vec<String>)],
    global_whitelist: Option<&(PathBuf, (String, Location))>,
    names: &BTreeSet<String>,
) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = Vec::new();
    for (file_index, (file, owners)) in whitelist_files.iter().enumerate() {
        let (key, location) = raw
            .targets
            .iter()
            .enumerate()
            .find_map(|(i, t)| {
                let own = t.whitelist.as_ref()?;
                (normalize(base, &own.value) == *file).then(|| (format!("targets[{i}].whitelist"), own.referenced))
            })
            .or_else(|| global_whitelist.map(|(_, named)| named.clone()))
            .expect("every whitelist file was named by a key");
        let text = std::fs::read_to_string(file).map_err(|err| {
            ConfigError::at(
                path,
                &location,
                key,
                format!("cannot read whitelist `{}`: {err}", file.display()),
            )
        })?;
        let parsed: RawWhitelist = parse_yaml(file, &text)?;
        for (i, allow) in parsed.allow.iter().enumerate() {
            entries.extend(build_entries(file, file_index, i, allow, owners, names)?);
        }
    }
    Ok(entries)
}

/// Records that `file` is read, and which target (if any) has it as its own whitelist.
fn register(files: &mut Vec<(PathBuf, Vec<String>)>, file: &Path, owner: Option<&str>) {
    let slot = files.iter().position(|(f, _)| f == file).unwrap_or_else(|| {
        files.push((file.to_path_buf(), Vec::new()));
        files.len() - 1
    });
    if let Some(owner) = owner {
        files[slot].1.push(owner.to_string());
    }
}

fn normalize(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn nonzero_duration(
    file: &Path,
    value: Option<&Spanned<raw::HumanDuration>>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.value.0.is_zero() => Err(ConfigError::at(file, &v.referenced, key, "must be greater than zero")),
        Some(v) => Ok(v.value.0),
    }
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
            let mut list = v.value.clone();
            list.dedup();
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
        published,
        whitelist_file: None,
    })
}

fn build_entries(
    file: &Path,
    file_index: usize,
    index: usize,
    allow: &RawAllow,
    owners: &[String],
    names: &BTreeSet<String>,
) -> Result<Vec<Entry>, ConfigError> {
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
            ports: ports.clone(),
            belongs_to: belongs_to.clone(),
            tagged: allow.target.as_ref().map(|t| t.value.trim().to_string()),
            comment: allow.comment.clone(),
            file: file_index,
            line: address.referenced.line(),
        })
        .collect())
}
