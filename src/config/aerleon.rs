//! The firewall team's network definitions, in the format aerleon (and capirca before it) reads:
//! `*.net` files (`TOKEN = 192.0.2.0/24  # comment`, continuation lines, nested tokens) and YAML
//! files with a top-level `networks:` mapping. Many firewall teams keep their objects there, so a
//! whitelist can be a list of tokens instead of a copy. Pure functions over text: the files are
//! read by `config::load`. The rules follow aerleon's own parser (`aerleon/lib/naming.py`); where
//! aerleon drops a value without a word (an unparsable address), this reader refuses it, since a
//! whitelist that silently loses an address is the fault the audit exists to find.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::{ConfigError, parse_yaml, raw};
use crate::prefix::canonical_net;

/// One network token: its values in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub name: String,
    pub file: PathBuf,
    /// Line and column of the token's name.
    pub position: (u64, u64),
    pub values: Vec<Value>,
}

/// One value of a token: an address or the name of another token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub kind: ValueKind,
    /// Line and column of the value, in its token's file.
    pub position: (u64, u64),
    pub comment: Option<String>,
}

/// What a value is. An `fqdn` value of the YAML format is not kept: it names no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    /// Host bits cleared, as aerleon does; IPv4-mapped prefixes as the IPv4 prefix.
    Address(IpNet),
    Token(String),
}

/// One address a token resolves to, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub prefix: IpNet,
    pub file: PathBuf,
    pub line: u64,
    /// The tokens from the one asked for to the one that holds the address: `VENDOR > VENDOR_V6`.
    pub via: String,
    pub comment: Option<String>,
}

/// Whether aerleon reads `value` as a token name (`naming.py`'s `token_re`) rather than an address.
fn is_token_name(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses an address or CIDR as aerleon does (`ipaddress.ip_network(strict=False)`: host bits
/// are cleared), refusing leading zeros, which aerleon drops.
pub fn parse_address(text: &str) -> Result<IpNet, String> {
    if let Some(plain) = raw::without_leading_zeros(text) {
        return Err(format!(
            "`{text}` has a leading zero, which some tools read as octal: write {plain} (aerleon drops it without a word)"
        ));
    }
    let net = match text.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => text.parse::<IpNet>().map_err(|_| {
            format!(
                "`{text}` is neither an address nor a token name: write 198.51.100.7, 198.51.100.0/28, 2001:db8::/64 or a token of letters, digits, `-` and `_` (aerleon drops it without a word)"
            )
        })?,
    };
    Ok(canonical_net(net.trunc()))
}

/// Where each word of `text` starts (a byte offset) and the word.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_whitespace()
        .map(move |word| (word.as_ptr() as usize - text.as_ptr() as usize, word))
}

/// 1-based column of byte `offset` in `line`.
fn column(line: &str, offset: usize) -> u64 {
    line[..offset].chars().count() as u64 + 1
}

fn at(file: &Path, position: (u64, u64), key: Option<&str>, message: impl Into<String>) -> ConfigError {
    let mut error = ConfigError::new(file, key.map(str::to_string), message);
    error.position = Some(position);
    error
}

/// Parses a capirca-format `.net` file: `TOKEN = value value  # comment`, then lines of more
/// values for the same token; `#` starts a comment, which applies to every value of its line.
pub fn parse_net(file: &Path, text: &str) -> Result<Vec<Definition>, ConfigError> {
    let mut definitions: Vec<Definition> = Vec::new();
    for (index, full) in text.lines().enumerate() {
        let line_number = index as u64 + 1;
        let (content, comment) = match full.split_once('#') {
            Some((content, comment)) => (content, Some(comment.trim()).filter(|c| !c.is_empty())),
            None => (full, None),
        };
        if content.trim().is_empty() {
            continue;
        }
        let values_start = match content.split_once('=') {
            Some((name, values)) => {
                let name_offset = name.len() - name.trim_start().len();
                let name = name.trim();
                let position = (line_number, column(full, name_offset));
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(at(
                        file,
                        position,
                        None,
                        format!("`{}` is not a token name: write NAME = VALUE", name.escape_debug()),
                    ));
                }
                if values.contains('=') {
                    // aerleon keeps the text between the first two `=` only: the rest would be lost.
                    return Err(at(
                        file,
                        position,
                        Some(name),
                        "more than one `=` on the line: write one token per line",
                    ));
                }
                definitions.push(Definition {
                    name: name.to_string(),
                    file: file.to_path_buf(),
                    position,
                    values: Vec::new(),
                });
                content.len() - values.len()
            }
            None => 0,
        };
        let Some(definition) = definitions.last_mut() else {
            let offset = content.len() - content.trim_start().len();
            return Err(at(
                file,
                (line_number, column(full, offset)),
                None,
                "a value before any token: start a definition with NAME = VALUE",
            ));
        };
        for (offset, word) in words(&content[values_start..]) {
            let position = (line_number, column(full, values_start + offset));
            let kind = if is_token_name(word) {
                ValueKind::Token(word.to_string())
            } else {
                ValueKind::Address(parse_address(word).map_err(|m| at(file, position, Some(&definition.name), m))?)
            };
            definition.values.push(Value {
                kind,
                position,
                comment: comment.map(str::to_string),
            });
        }
    }
    Ok(definitions)
}

/// A YAML definitions file as written: only `networks:` is read (`services:` is not ours).
#[derive(Debug, Deserialize)]
struct RawDefinitionsFile {
    networks: Option<BTreeMap<String, Spanned<RawNetwork>>>,
}

#[derive(Debug, Deserialize)]
struct RawNetwork {
    values: Option<Vec<Spanned<RawValue>>>,
}

/// One item of `values:`: a bare string names a token, a mapping has `name`, `address` or `fqdn`
/// (aerleon's order of preference) and an optional `comment`. Other keys are aerleon's business.
#[derive(Debug)]
enum RawValue {
    Name(String),
    Item(RawItem),
}

#[derive(Debug, Deserialize)]
struct RawItem {
    name: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    fqdn: Option<serde::de::IgnoredAny>,
    comment: Option<String>,
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token name or a mapping with `address`, `name` or `fqdn`")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(RawValue::Name(text.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawItem::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawValue::Item)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn position_of(location: &serde_saphyr::Location) -> (u64, u64) {
    (location.line(), location.column())
}

/// Parses an aerleon YAML definitions file. `None`: the file has no `networks:` (a services
/// file, or no definitions at all), which aerleon skips too.
pub fn parse_yaml_networks(file: &Path, text: &str) -> Result<Option<Vec<Definition>>, ConfigError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let parsed: RawDefinitionsFile = parse_yaml(file, text)?;
    let Some(networks) = parsed.networks else {
        return Ok(None);
    };
    let mut definitions = Vec::with_capacity(networks.len());
    for (name, network) in networks {
        let position = position_of(&network.referenced);
        let key = format!("networks.{name}");
        let Some(raw_values) = &network.value.values else {
            return Err(at(
                file,
                position,
                Some(&key),
                "no `values` list: aerleon ignores such a definition; write `values: [{address: 198.51.100.0/28}]`",
            ));
        };
        let mut values = Vec::with_capacity(raw_values.len());
        for (i, raw_value) in raw_values.iter().enumerate() {
            let key = format!("{key}.values[{i}]");
            let item_position = position_of(&raw_value.referenced);
            let value = match &raw_value.value {
                RawValue::Name(token) => Value {
                    kind: ValueKind::Token(token.clone()),
                    position: item_position,
                    comment: None,
                },
                RawValue::Item(item) => {
                    let (kind, position) = match (&item.name, &item.address, &item.fqdn) {
                        (Some(token), _, _) => (ValueKind::Token(token.value.clone()), position_of(&token.referenced)),
                        (None, Some(address), _) => {
                            let at_address = position_of(&address.referenced);
                            let prefix =
                                parse_address(&address.value).map_err(|m| at(file, at_address, Some(&key), m))?;
                            (ValueKind::Address(prefix), at_address)
                        }
                        // A DNS name: aerleon keeps it for DNS filters, never as an address.
                        (None, None, Some(_)) => continue,
                        (None, None, None) => {
                            return Err(at(
                                file,
                                item_position,
                                Some(&key),
                                "a value needs `address`, `name` or `fqdn`",
                            ));
                        }
                    };
                    Value {
                        kind,
                        position,
                        comment: item.comment.clone(),
                    }
                }
            };
            values.push(value);
        }
        definitions.push(Definition {
            name,
            file: file.to_path_buf(),
            position,
            values,
        });
    }
    Ok(Some(definitions))
}

/// Every network token of a definitions directory, checked as aerleon checks them when it loads
/// the directory: no token defined twice, no reference to a token that is not defined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definitions {
    by_name: BTreeMap<String, Definition>,
}

impl Definitions {
    /// Gathers the definitions of every file, in the order given.
    pub fn new(files: Vec<Vec<Definition>>) -> Result<Self, ConfigError> {
        let mut by_name: BTreeMap<String, Definition> = BTreeMap::new();
        for definition in files.into_iter().flatten() {
            if let Some(first) = by_name.get(&definition.name) {
                return Err(at(
                    &definition.file,
                    definition.position,
                    Some(&definition.name),
                    format!(
                        "token `{}` is already defined at {}:{}: aerleon refuses a token defined twice",
                        definition.name,
                        first.file.display(),
                        first.position.0
                    ),
                ));
            }
            by_name.insert(definition.name.clone(), definition);
        }
        for definition in by_name.values() {
            for value in &definition.values {
                if let ValueKind::Token(token) = &value.kind
                    && !by_name.contains_key(token)
                {
                    return Err(at(
                        &definition.file,
                        value.position,
                        Some(&definition.name),
                        format!(
                            "token `{token}` is not defined in any definition file of the directory: aerleon refuses the directory"
                        ),
                    ));
                }
            }
        }
        Ok(Self { by_name })
    }

    /// Whether `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// How many tokens are defined.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no token is defined.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The addresses `name` resolves to, nested tokens expanded, each prefix once (the first
    /// place it is written), in the order written. `name` must be defined.
    pub fn resolve(&self, name: &str) -> Result<Vec<Resolved>, ConfigError> {
        let mut memo = HashMap::new();
        self.expand(name, &mut Vec::new(), &mut memo)
    }

    fn expand<'a>(
        &'a self,
        name: &'a str,
        stack: &mut Vec<&'a str>,
        memo: &mut HashMap<&'a str, Vec<Resolved>>,
    ) -> Result<Vec<Resolved>, ConfigError> {
        if let Some(done) = memo.get(name) {
            return Ok(done.clone());
        }
        let definition = &self.by_name[name];
        stack.push(name);
        let mut out: Vec<Resolved> = Vec::new();
        let mut seen: HashSet<IpNet> = HashSet::new();
        let mut push = |resolved: Resolved| {
            if seen.insert(resolved.prefix) {
                out.push(resolved);
            }
        };
        for value in &definition.values {
            match &value.kind {
                ValueKind::Address(prefix) => push(Resolved {
                    prefix: *prefix,
                    file: definition.file.clone(),
                    line: value.position.0,
                    via: name.to_string(),
                    comment: value.comment.clone(),
                }),
                ValueKind::Token(token) => {
                    if let Some(start) = stack.iter().position(|t| t == token) {
                        let mut cycle: Vec<&str> = stack[start..].to_vec();
                        cycle.push(token);
                        return Err(at(
                            &definition.file,
                            value.position,
                            Some(name),
                            format!(
                                "token cycle {}: aerleon recurses until it fails; remove one of the references",
                                cycle.join(" > ")
                            ),
                        ));
                    }
                    let (token, _) = self.by_name.get_key_value(token).expect("references checked in new");
                    for mut inner in self.expand(token, stack, memo)? {
                        inner.via = format!("{name} > {}", inner.via);
                        push(inner);
                    }
                }
            }
        }
        stack.pop();
        if out.is_empty() {
            return Err(at(
                &definition.file,
                definition.position,
                Some(name),
                format!(
                    "token `{name}` holds no address (no value, or only `fqdn` values): aerleon refuses to resolve it"
                ),
            ));
        }
        memo.insert(name, out.clone());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Definitions, ValueKind, parse_address, parse_net, parse_yaml_networks};

    fn net(text: &str) -> ipnet::IpNet {
        text.parse().unwrap()
    }

    fn definitions(net_text: &str, yaml_text: &str) -> Result<Definitions, String> {
        let net_file = parse_net(Path::new("d/NETWORK.net"), net_text).map_err(|e| e.summary())?;
        let yaml_file = parse_yaml_networks(Path::new("d/networks.yaml"), yaml_text)
            .map_err(|e| e.summary())?
            .unwrap_or_default();
        Definitions::new(vec![net_file, yaml_file]).map_err(|e| e.summary())
    }

    fn resolved(defs: &Definitions, token: &str) -> Vec<String> {
        defs.resolve(token)
            .unwrap()
            .iter()
            .map(|r| format!("{} {}:{} {} {:?}", r.prefix, r.file.display(), r.line, r.via, r.comment))
            .collect()
    }

    #[test]
    fn addresses_are_read_as_aerleon_reads_them() {
        assert_eq!(parse_address("192.0.2.7"), Ok(net("192.0.2.7/32")));
        assert_eq!(parse_address("2001:DB8::1"), Ok(net("2001:db8::1/128")));
        // strict=False: host bits are cleared.
        assert_eq!(parse_address("198.51.100.77/28"), Ok(net("198.51.100.64/28")));
        assert_eq!(parse_address("::ffff:192.0.2.0/120"), Ok(net("192.0.2.0/24")));
        assert!(
            parse_address("192.0.2.300")
                .unwrap_err()
                .contains("neither an address nor a token")
        );
        assert!(parse_address("010.0.0.1").unwrap_err().contains("leading zero"));
        assert!(parse_address("192.0.2.0/33").is_err());
    }

    #[test]
    fn net_files_continue_tokens_and_keep_comments_per_line() {
        let text = "# header\n\nVENDOR = 192.0.2.0/28  # office\n         198.51.100.7 203.0.113.9\n\nVENDOR_V6=2001:db8::/48 # v6\n  VENDOR\n";
        let defs = parse_net(Path::new("d/NETWORK.net"), text).unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[0].name, "VENDOR");
        assert_eq!(defs[0].position, (3, 1));
        let values: Vec<_> = defs[0]
            .values
            .iter()
            .map(|v| (v.position, v.comment.as_deref()))
            .collect();
        assert_eq!(values, [((3, 10), Some("office")), ((4, 10), None), ((4, 23), None)]);
        assert_eq!(defs[1].values[1].kind, ValueKind::Token("VENDOR".into()));
    }

    #[test]
    fn net_file_faults_are_refused_at_their_place() {
        let cases = [
            (
                "192.0.2.1\nA = 192.0.2.2\n",
                "d/NETWORK.net:1:1: a value before any token: start a definition with NAME = VALUE",
            ),
            (
                "A = 192.0.2.1\n    192.0.2.256  # typo\n",
                "d/NETWORK.net:2:5: A: `192.0.2.256` is neither an address nor a token name: write 198.51.100.7, 198.51.100.0/28, 2001:db8::/64 or a token of letters, digits, `-` and `_` (aerleon drops it without a word)",
            ),
            (
                "A = 192.0.2.1 = 192.0.2.2\n",
                "d/NETWORK.net:1:1: A: more than one `=` on the line: write one token per line",
            ),
            (
                " = 192.0.2.1\n",
                "d/NETWORK.net:1:2: `` is not a token name: write NAME = VALUE",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_net(Path::new("d/NETWORK.net"), text).unwrap_err().summary(),
                expected
            );
        }
    }

    #[test]
    fn yaml_networks_name_address_and_fqdn_values() {
        let yaml = "networks:\n  V6:\n    values:\n      - address: 2001:db8:1::/48\n        comment: v6 office\n      - fqdn: sftp.example.com\n      - name: V4\n      - V4\nservices:\n  SSH:\n    - port: 22\n      protocol: tcp\n";
        let defs = definitions("V4 = 192.0.2.1 # one\n", yaml).unwrap();
        assert_eq!(
            resolved(&defs, "V6"),
            [
                "2001:db8:1::/48 d/networks.yaml:4 V6 Some(\"v6 office\")",
                "192.0.2.1/32 d/NETWORK.net:1 V6 > V4 Some(\"one\")",
            ]
        );
        assert_eq!(
            parse_yaml_networks(Path::new("s.yaml"), "services: {}\n").unwrap(),
            None
        );
        assert_eq!(parse_yaml_networks(Path::new("s.yaml"), "\n").unwrap(), None);
    }

    #[test]
    fn yaml_faults_are_refused_at_their_place() {
        let no_values = parse_yaml_networks(Path::new("n.yaml"), "networks:\n  A:\n    value: []\n").unwrap_err();
        assert_eq!(
            no_values.summary(),
            "n.yaml:3:5: networks.A: no `values` list: aerleon ignores such a definition; write `values: [{address: 198.51.100.0/28}]`"
        );
        let no_kind = parse_yaml_networks(
            Path::new("n.yaml"),
            "networks:\n  A:\n    values:\n      - comment: x\n",
        )
        .unwrap_err();
        assert_eq!(
            no_kind.summary(),
            "n.yaml:4:9: networks.A.values[0]: a value needs `address`, `name` or `fqdn`"
        );
        let bad = parse_yaml_networks(
            Path::new("n.yaml"),
            "networks:\n  A:\n    values:\n      - address: 192.0.2.0/40\n",
        )
        .unwrap_err();
        assert!(
            bad.summary()
                .starts_with("n.yaml:4:18: networks.A.values[0]: `192.0.2.0/40` is neither"),
            "{}",
            bad.summary()
        );
    }

    #[test]
    fn nested_tokens_resolve_once_per_prefix() {
        let defs = definitions(
            "ALL = A B 192.0.2.1\nA = 192.0.2.1 C\nB = C 2001:db8::/32\nC = 198.51.100.0/24 # c\n",
            "",
        )
        .unwrap();
        assert_eq!(
            resolved(&defs, "ALL"),
            [
                "192.0.2.1/32 d/NETWORK.net:2 ALL > A None",
                "198.51.100.0/24 d/NETWORK.net:4 ALL > A > C Some(\"c\")",
                "2001:db8::/32 d/NETWORK.net:3 ALL > B None",
            ]
        );
    }

    #[test]
    fn directory_faults_are_refused_as_aerleon_refuses_them() {
        assert_eq!(
            definitions(
                "A = 192.0.2.1\n",
                "networks:\n  A:\n    values: [{address: 192.0.2.2}]\n"
            )
            .unwrap_err(),
            "d/networks.yaml:3:5: A: token `A` is already defined at d/NETWORK.net:1: aerleon refuses a token defined twice"
        );
        assert_eq!(
            definitions("A = 192.0.2.1\nB = A MISSING\n", "").unwrap_err(),
            "d/NETWORK.net:2:7: B: token `MISSING` is not defined in any definition file of the directory: aerleon refuses the directory"
        );
        let cycle = definitions("A = B\nB = 192.0.2.1 C\nC = A\n", "").unwrap();
        assert_eq!(
            cycle.resolve("A").unwrap_err().summary(),
            "d/NETWORK.net:3:5: C: token cycle A > B > C > A: aerleon recurses until it fails; remove one of the references"
        );
        let empty = definitions("A = B\nB =\n", "").unwrap();
        assert_eq!(
            empty.resolve("A").unwrap_err().summary(),
            "d/NETWORK.net:2:1: B: token `B` holds no address (no value, or only `fqdn` values): aerleon refuses to resolve it"
        );
    }
}
