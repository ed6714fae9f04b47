//! The `published:` sources of a target: vendor address lists fetched over HTTP(S) or read from a
//! file. Header values may hold secrets: they are expanded from the environment at load and never
//! printed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json_path::JsonPath;
use serde_saphyr::Spanned;

use super::raw::{ListFormat, RawPublished};
use super::{ConfigError, defaults};

/// Where a list comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum ListLocation {
    Http(reqwest::Url),
    File(PathBuf),
}

impl fmt::Debug for ListLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(url) => {
                // A URL may carry a password: never shown.
                let mut shown = url.clone();
                if shown.password().is_some() {
                    let _ = shown.set_password(Some("redacted"));
                }
                f.debug_tuple("Http").field(&shown.as_str()).finish()
            }
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A header whose value is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHeader {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl fmt::Debug for SecretHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

/// One published list, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedSource {
    pub location: ListLocation,
    /// The `url` label: the URL without credentials, or `file://` and the path.
    pub label: String,
    pub format: ListFormat,
    /// For json and yaml: the RFC 9535 `JSONPath` selecting the address strings.
    pub select: Option<JsonPath>,
    pub refresh: Duration,
    pub timeout: Duration,
    pub headers: Vec<SecretHeader>,
    pub allow_empty: bool,
    pub max_size: u64,
    pub max_addresses: u64,
}

/// Validates one `published` entry of `targets[index]`.
pub fn build(file: &Path, key: &str, entry: &Spanned<RawPublished>) -> Result<PublishedSource, ConfigError> {
    let raw = &entry.value;
    let at = |location: &serde_saphyr::Location, field: &str, message: String| {
        field_error(file, key, location, field, message)
    };
    let (location, label) = location(file, key, entry)?;
    let format = raw.format.unwrap_or(ListFormat::Text);
    let select = match (&raw.select, format) {
        (Some(select), ListFormat::Text) => {
            return Err(at(
                &select.referenced,
                ".select",
                "`select` applies to json and yaml lists, not text".into(),
            ));
        }
        (Some(select), _) => Some(JsonPath::parse(&select.value).map_err(|err| {
            at(
                &select.referenced,
                ".select",
                format!("invalid JSONPath `{}`: {err}", select.value),
            )
        })?),
        // A document that is a plain array of address strings.
        (None, ListFormat::Json | ListFormat::Yaml) => Some(JsonPath::parse("$[*]").expect("valid JSONPath")),
        (None, ListFormat::Text) => None,
    };
    let positive = |value: &Option<Spanned<super::raw::HumanDuration>>, field: &str, default: Duration| match value {
        None => Ok(default),
        Some(v) if v.value.0.is_zero() => Err(at(&v.referenced, field, "must be greater than zero".into())),
        Some(v) => Ok(v.value.0),
    };
    let headers = headers(file, key, raw)?;
    Ok(PublishedSource {
        location,
        label,
        format,
        select,
        refresh: positive(&raw.refresh, ".refresh", defaults::LIST_REFRESH)?,
        timeout: positive(&raw.timeout, ".timeout", defaults::LIST_TIMEOUT)?,
        headers,
        allow_empty: raw.allow_empty.unwrap_or(false),
        max_size: u64::from(raw.max_size.map_or(defaults::LIST_MAX_SIZE, |n| n.0)),
        max_addresses: u64::from(raw.max_addresses.map_or(defaults::LIST_MAX_ADDRESSES, |n| n.0)),
    })
}

/// Where the list is, and the label it is known by (without credentials).
fn location(file: &Path, key: &str, entry: &Spanned<RawPublished>) -> Result<(ListLocation, String), ConfigError> {
    let raw = &entry.value;
    let at = |location: &serde_saphyr::Location, field: &str, message: String| {
        field_error(file, key, location, field, message)
    };
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    Ok(match (&raw.url, &raw.path) {
        (Some(_), Some(path)) => {
            return Err(at(&path.referenced, ".path", "set `url` or `path`, not both".into()));
        }
        (None, None) => {
            return Err(at(
                &entry.referenced,
                "",
                "a published list needs `url` (http, https, file) or `path`".into(),
            ));
        }
        (None, Some(path)) => {
            let path = if path.value.is_absolute() {
                path.value.clone()
            } else {
                base.join(&path.value)
            };
            // Absolute, so the `url` label and the state file are the same however the
            // configuration file was named on the command line (and the label is a valid URL).
            let path = std::path::absolute(&path).unwrap_or(path);
            let label = format!("file://{}", path.display());
            (ListLocation::File(path), label)
        }
        (Some(url), None) => {
            let parsed = reqwest::Url::parse(url.value.trim())
                .map_err(|err| at(&url.referenced, ".url", format!("invalid URL `{}`: {err}", url.value)))?;
            match parsed.scheme() {
                "http" | "https" => {
                    let mut shown = parsed.clone();
                    // Credentials in a URL are secrets too: keep them out of labels and logs.
                    let _ = shown.set_username("");
                    let _ = shown.set_password(None);
                    (ListLocation::Http(parsed), shown.to_string())
                }
                "file" => {
                    let path = parsed.to_file_path().map_err(|()| {
                        at(
                            &url.referenced,
                            ".url",
                            format!("`{}` is not a local file URL", url.value),
                        )
                    })?;
                    (ListLocation::File(path), parsed.to_string())
                }
                other => {
                    return Err(at(
                        &url.referenced,
                        ".url",
                        format!("unsupported scheme `{other}`: use http, https or file"),
                    ));
                }
            }
        }
    })
}

/// The extra request headers, with `${ENV}` expanded; values are marked sensitive.
fn headers(file: &Path, key: &str, raw: &RawPublished) -> Result<Vec<SecretHeader>, ConfigError> {
    let at = |location: &serde_saphyr::Location, field: &str, message: String| {
        field_error(file, key, location, field, message)
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers.iter().flatten() {
        let field = format!(".headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            at(
                &value.referenced,
                &field,
                format!("`{name}` is not a valid header name"),
            )
        })?;
        let expanded = expand_env(&value.value).map_err(|var| {
            at(
                &value.referenced,
                &field,
                format!("environment variable `{var}` is not set"),
            )
        })?;
        let mut header_value = HeaderValue::from_str(&expanded).map_err(|_| {
            at(
                &value.referenced,
                &field,
                "the value (not shown) is not a valid header value".into(),
            )
        })?;
        header_value.set_sensitive(true);
        headers.push(SecretHeader {
            name: header,
            value: header_value,
        });
    }
    Ok(headers)
}

/// An error at `key` plus `field` (`.url`, `.headers.X`) of a published entry.
fn field_error(file: &Path, key: &str, location: &serde_saphyr::Location, field: &str, message: String) -> ConfigError {
    ConfigError::at(file, location, format!("{key}{field}"), message)
}

/// Expands `${NAME}` from the environment; returns the name of the first unset variable.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(&std::env::var(name).map_err(|_| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn env_expansion() {
        // PATH is set in every test environment.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand_env("Bearer ${PATH}!").unwrap(), format!("Bearer {path}!"));
        assert_eq!(expand_env("no variables").unwrap(), "no variables");
        assert_eq!(
            expand_env("${WLA_SURELY_UNSET_VARIABLE}").unwrap_err(),
            "WLA_SURELY_UNSET_VARIABLE"
        );
        assert_eq!(expand_env("unterminated ${X").unwrap(), "unterminated ${X");
    }
}
