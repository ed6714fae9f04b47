//! `--web.config.file`: TLS and basic authentication for the HTTP endpoints, in the Prometheus
//! exporter-toolkit format (the file `node_exporter` and `blackbox_exporter` read), so one file can
//! serve them all. What rustls cannot do (TLS 1.0/1.1, CBC suites) is refused with a reason, never
//! ignored: a security setting that silently does nothing is worse than an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, normalize, parse_yaml, read_bounded};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<Spanned<RawTls>>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    client_auth_type: Option<Spanned<String>>,
    client_ca_file: Option<Spanned<PathBuf>>,
    min_version: Option<Spanned<String>>,
    max_version: Option<Spanned<String>>,
    cipher_suites: Option<Vec<Spanned<String>>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<Spanned<String>>>,
    client_allowed_sans: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted for compatibility: this server speaks HTTP/1.1 only.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, Spanned<String>>>,
}

/// Who must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Verified against `client_ca_file` when given; optional.
    VerifyIfGiven,
    /// Required and verified against `client_ca_file`.
    RequireAndVerify,
}

/// The TLS versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// TLS settings, with the PEM files read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub cert_pem: Vec<u8>,
    pub key_file: PathBuf,
    pub key_pem: Vec<u8>,
    pub client_auth: ClientAuth,
    pub client_ca_file: Option<PathBuf>,
    pub client_ca_pem: Option<Vec<u8>>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites by their IANA names; empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    pub prefer_server_cipher_suites: bool,
    /// Key exchange groups: `X25519`, `CurveP256`, `CurveP384`; empty: rustls' defaults.
    pub curve_preferences: Vec<String>,
}

/// The loaded web configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub path: Option<PathBuf>,
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash.
    pub basic_auth_users: BTreeMap<String, String>,
    /// Response headers added to every answer.
    pub headers: Vec<(String, String)>,
}

/// The TLS 1.2 suites rustls offers, by the names exporter-toolkit files use.
pub const TLS12_SUITES: [&str; 6] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// The headers exporter-toolkit allows in `http_server_config.headers`.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// Reads and validates a web configuration file and the PEM files it names.
pub fn load_web(path: &Path) -> Result<WebConfig, ConfigError> {
    let text =
        read_bounded(path).map_err(|_| ConfigError::new(path, None, format!("cannot read `{}`", path.display())))?;
    let raw: RawWebConfig = parse_yaml(path, &text)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let tls = raw
        .tls_server_config
        .as_ref()
        .map(|tls| build_tls(path, base, tls))
        .transpose()?;
    let mut basic_auth_users = BTreeMap::new();
    for (user, hash) in raw.basic_auth_users.iter().flatten() {
        if !is_bcrypt_hash(hash.value.trim()) {
            return Err(ConfigError::at(
                path,
                &hash.referenced,
                format!("basic_auth_users.{user}"),
                "not a bcrypt hash ($2y$, $2b$ or $2a$, a cost from 04 to 31, 53 characters): make one with `htpasswd -nBC 10 USER`",
            ));
        }
        if user.is_empty() || user.contains(':') {
            return Err(ConfigError::at(
                path,
                &hash.referenced,
                "basic_auth_users",
                format!("`{user}` cannot be a user name (empty, or with a colon)"),
            ));
        }
        basic_auth_users.insert(user.clone(), hash.value.trim().to_string());
    }
    let mut headers = Vec::new();
    for (name, value) in raw.http_server_config.iter().flat_map(|h| h.headers.iter().flatten()) {
        let Some(allowed) = ALLOWED_HEADERS.iter().find(|a| a.eq_ignore_ascii_case(name)) else {
            return Err(ConfigError::at(
                path,
                &value.referenced,
                format!("http_server_config.headers.{name}"),
                format!(
                    "`{name}` cannot be set; the headers that can: {}",
                    ALLOWED_HEADERS.join(", ")
                ),
            ));
        };
        if value.value.chars().any(char::is_control) {
            return Err(ConfigError::at(
                path,
                &value.referenced,
                format!("http_server_config.headers.{name}"),
                "a header value has no control characters",
            ));
        }
        headers.push(((*allowed).to_string(), value.value.clone()));
    }
    Ok(WebConfig {
        path: Some(path.to_path_buf()),
        tls,
        basic_auth_users,
        headers,
    })
}

fn build_tls(path: &Path, base: &Path, raw: &Spanned<RawTls>) -> Result<TlsSettings, ConfigError> {
    let tls = &raw.value;
    let read = |key: &str, file: &Spanned<PathBuf>| -> Result<(PathBuf, Vec<u8>), ConfigError> {
        let full = normalize(base, &file.value);
        std::fs::read(&full).map(|pem| (full.clone(), pem)).map_err(|err| {
            ConfigError::at(
                path,
                &file.referenced,
                format!("tls_server_config.{key}"),
                format!("cannot read `{}`: {err}", full.display()),
            )
        })
    };
    let missing = |key: &str| {
        ConfigError::at(
            path,
            &raw.referenced,
            format!("tls_server_config.{key}"),
            format!("`{key}` is required with tls_server_config"),
        )
    };
    let cert = tls.cert_file.as_ref().ok_or_else(|| missing("cert_file"))?;
    let key = tls.key_file.as_ref().ok_or_else(|| missing("key_file"))?;
    let (cert_file, cert_pem) = read("cert_file", cert)?;
    let (key_file, key_pem) = read("key_file", key)?;
    let client_auth = client_auth(path, tls.client_auth_type.as_ref())?;
    let (client_ca_file, client_ca_pem) = match (&tls.client_ca_file, client_auth) {
        (Some(file), _) => {
            let (full, pem) = read("client_ca_file", file)?;
            (Some(full), Some(pem))
        }
        (None, ClientAuth::None) => (None, None),
        (None, _) => return Err(missing("client_ca_file")),
    };
    if let Some(sans) = &tls.client_allowed_sans {
        return Err(ConfigError::at(
            path,
            &sans.referenced,
            "tls_server_config.client_allowed_sans",
            "client_allowed_sans is not supported: issue client certificates from a CA of their own (client_ca_file)",
        ));
    }
    let min_version = tls_version(path, "min_version", tls.min_version.as_ref(), TlsVersion::Tls12)?;
    let max_version = tls_version(path, "max_version", tls.max_version.as_ref(), TlsVersion::Tls13)?;
    if min_version > max_version {
        return Err(ConfigError::at(
            path,
            &raw.referenced,
            "tls_server_config.min_version",
            "min_version is above max_version",
        ));
    }
    let (cipher_suites, curve_preferences) = suites_and_curves(path, tls)?;
    Ok(TlsSettings {
        cert_file,
        cert_pem,
        key_file,
        key_pem,
        client_auth,
        client_ca_file,
        client_ca_pem,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: tls.prefer_server_cipher_suites.unwrap_or(true),
        curve_preferences,
    })
}

/// `client_auth_type`: the kinds that verify what they accept.
fn client_auth(path: &Path, kind: Option<&Spanned<String>>) -> Result<ClientAuth, ConfigError> {
    Ok(match kind {
        None => ClientAuth::None,
        Some(kind) => match kind.value.as_str() {
            "NoClientCert" => ClientAuth::None,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
            "RequestClientCert" | "RequireAnyClientCert" => {
                return Err(ConfigError::at(
                    path,
                    &kind.referenced,
                    "tls_server_config.client_auth_type",
                    format!(
                        "`{}` accepts certificates nobody verified; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
                        kind.value
                    ),
                ));
            }
            other => {
                return Err(ConfigError::at(
                    path,
                    &kind.referenced,
                    "tls_server_config.client_auth_type",
                    format!(
                        "unknown client_auth_type `{other}`: NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                    ),
                ));
            }
        },
    })
}

/// `min_version` / `max_version`.
fn tls_version(
    path: &Path,
    key: &str,
    value: Option<&Spanned<String>>,
    default: TlsVersion,
) -> Result<TlsVersion, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => match v.value.as_str() {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(ConfigError::at(
                path,
                &v.referenced,
                format!("tls_server_config.{key}"),
                format!(
                    "{} is not offered (rustls speaks TLS 1.2 and 1.3 only): use TLS12 or TLS13",
                    v.value
                ),
            )),
            other => Err(ConfigError::at(
                path,
                &v.referenced,
                format!("tls_server_config.{key}"),
                format!("unknown TLS version `{other}`: TLS12 or TLS13"),
            )),
        },
    }
}

/// `cipher_suites` and `curve_preferences`, each checked against what rustls offers.
fn suites_and_curves(path: &Path, tls: &RawTls) -> Result<(Vec<String>, Vec<String>), ConfigError> {
    let mut cipher_suites = Vec::new();
    for (i, suite) in tls.cipher_suites.iter().flatten().enumerate() {
        if !TLS12_SUITES.contains(&suite.value.as_str()) {
            return Err(ConfigError::at(
                path,
                &suite.referenced,
                format!("tls_server_config.cipher_suites[{i}]"),
                format!(
                    "`{}` is not offered (no CBC or RSA key exchange suites); the TLS 1.2 suites: {}",
                    suite.value,
                    TLS12_SUITES.join(", ")
                ),
            ));
        }
        cipher_suites.push(suite.value.clone());
    }
    let mut curve_preferences = Vec::new();
    for (i, curve) in tls.curve_preferences.iter().flatten().enumerate() {
        if !["X25519", "CurveP256", "CurveP384"].contains(&curve.value.as_str()) {
            return Err(ConfigError::at(
                path,
                &curve.referenced,
                format!("tls_server_config.curve_preferences[{i}]"),
                format!("unknown curve `{}`: X25519, CurveP256 or CurveP384", curve.value),
            ));
        }
        curve_preferences.push(curve.value.clone());
    }
    Ok((cipher_suites, curve_preferences))
}

/// `$2y$10$` and 53 characters of bcrypt's base64: the shape `htpasswd -B` writes.
pub fn is_bcrypt_hash(text: &str) -> bool {
    let parts: Vec<&str> = text.split('$').collect();
    matches!(parts.as_slice(), ["", version, cost, rest]
        if matches!(*version, "2a" | "2b" | "2y")
            && cost.len() == 2
            && cost.parse::<u8>().is_ok_and(|c| (4..=31).contains(&c))
            && rest.len() == 53
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_hashes_are_recognised_by_shape() {
        assert!(is_bcrypt_hash(
            "$2y$10$9BmGJ2CcLNWK/MKjbS5xQ.Sv1DqiGMYcW7LlA4Y2LhRrQ0hjcPZxe"
        ));
        assert!(!is_bcrypt_hash("$2y$10$short"));
        assert!(!is_bcrypt_hash("$1$saltsalt$hashhashhashhashhashha"));
        assert!(!is_bcrypt_hash("plaintext-password"));
        assert!(!is_bcrypt_hash(
            "$2y$03$9BmGJ2CcLNWK/MKjbS5xQ.Sv1DqiGMYcW7LlA4Y2LhRrQ0hjcPZxe"
        ));
    }
}
