//! The web config file: parsing and validation (exporter-toolkit format).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::Router;
use rustls::ServerConfig;
use serde::Deserialize;

use super::auth::{guard_layer, BasicAuth};
use super::tls::build_tls;

/// Headers that `http_server_config.headers` may set, with their allowed values (none listed:
/// any value), as in the exporter-toolkit.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An invalid or unreadable web config file. `Display` gives `FILE: KEY: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfigError {
    /// The web config file, when the configuration came from a file.
    pub file: Option<PathBuf>,
    /// The key the error is about (`tls_server_config.cert_file`), empty for the whole file.
    pub key: String,
    pub message: String,
}

impl WebConfigError {
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        WebConfigError { file: None, key: key.into(), message: message.into() }
    }
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("web config")?;
        if let Some(file) = &self.file {
            write!(f, " {}", file.display())?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for WebConfigError {}

// ---------------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) cipher_suites: Option<Vec<String>>,
    pub(super) curve_preferences: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    pub(super) prefer_server_cipher_suites: Option<bool>,
    pub(super) client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    burst: Option<u32>,
    interval: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------------------------

/// Client certificate policy (`tls_server_config.client_auth_type`), named as in Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthType {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuthType {
    pub(super) fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "" | "NoClientCert" => ClientAuthType::NoClientCert,
            "RequestClientCert" => ClientAuthType::RequestClientCert,
            // "RequireClientCert" is the exporter-toolkit's backwards-compatible spelling.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuthType::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuthType::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuthType::RequireAndVerifyClientCert,
            _ => return None,
        })
    }
}

/// A parsed and validated web config file.
#[derive(Clone)]
pub struct WebConfig {
    file: Option<PathBuf>,
    tls: Option<Arc<ServerConfig>>,
    client_auth: ClientAuthType,
    auth: Option<Arc<BasicAuth>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<(u32, Duration)>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("file", &self.file)
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("basic_auth_users", &self.auth.as_ref().map(|a| a.users().collect::<Vec<_>>()))
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

/// Load the web config when `--web.config.file` is given (an empty path counts as not given,
/// as in the exporter-toolkit). `Ok(None)` means plain HTTP without authentication.
pub fn load_optional(path: Option<&Path>) -> Result<Option<WebConfig>, WebConfigError> {
    match path {
        Some(p) if !p.as_os_str().is_empty() => WebConfig::load(p).map(Some),
        _ => Ok(None),
    }
}

impl WebConfig {
    /// Read, parse and validate a web config file: certificates and keys are loaded and
    /// checked, bcrypt hashes are checked, so that a bad file fails at startup.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let with_file = |mut e: WebConfigError| {
            e.file = Some(path.to_path_buf());
            e
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| with_file(WebConfigError::new("", format!("cannot read file: {e}"))))?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut config = WebConfig::from_yaml_str(&text, base_dir).map_err(with_file)?;
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parse and validate a web config given as YAML text; relative paths are taken relative
    /// to `base_dir`.
    pub fn from_yaml_str(text: &str, base_dir: &Path) -> Result<WebConfig, WebConfigError> {
        // An empty file (or one with only comments) is valid: no TLS, no authentication.
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| WebConfigError::new("", format!("invalid YAML: {e}")))?;
        let raw: RawConfig = if value.is_null() {
            RawConfig::default()
        } else {
            // serde_yaml's messages start with the path of the offending key
            // (`tls_server_config: unknown field ...`).
            serde_yaml::from_str(text).map_err(|e| WebConfigError::new("", e.to_string()))?
        };

        let (tls, client_auth) = match raw.tls_server_config {
            Some(tls) => build_tls(tls, base_dir)?,
            None => (None, ClientAuthType::NoClientCert),
        };

        let mut headers = Vec::new();
        if let Some(http) = raw.http_server_config {
            // `http2` is accepted for compatibility; this server speaks HTTP/1.1 only.
            let _ = http.http2;
            for (name, value) in http.headers.unwrap_or_default() {
                headers.push(validate_header(&name, &value)?);
            }
        }

        let rate_limit = match raw.rate_limit {
            None => None,
            Some(RawRateLimit { burst, interval }) => {
                let interval = match interval.as_deref().map(str::trim) {
                    None | Some("") | Some("0") | Some("0s") => Duration::ZERO,
                    Some(text) => humantime::parse_duration(text).map_err(|e| {
                        WebConfigError::new("rate_limit.interval", format!("invalid duration {text:?}: {e}"))
                    })?,
                };
                let burst = burst.unwrap_or(0);
                if interval.is_zero() {
                    None
                } else if burst == 0 {
                    return Err(WebConfigError::new(
                        "rate_limit.burst",
                        "must be at least 1 when rate_limit.interval is set (0 would refuse every request)",
                    ));
                } else {
                    Some((burst, interval))
                }
            }
        };

        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') {
                return Err(WebConfigError::new(format!("basic_auth_users.{user}"), "a user name cannot contain ':'"));
            }
            validate_bcrypt_hash(hash).map_err(|m| WebConfigError::new(format!("basic_auth_users.{user}"), m))?;
        }
        let auth = if users.is_empty() { None } else { Some(Arc::new(BasicAuth::new(users))) };

        Ok(WebConfig { file: None, tls, client_auth, auth, headers, rate_limit })
    }

    /// `"https"` when TLS is on, `"http"` otherwise (for the `listening on` line and links).
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Whether the server speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The rustls server configuration, when TLS is on (ALPN: `http/1.1`).
    pub fn tls_server_config(&self) -> Option<Arc<ServerConfig>> {
        self.tls.clone()
    }

    /// The client certificate policy.
    pub fn client_auth_type(&self) -> ClientAuthType {
        self.client_auth
    }

    /// The basic-auth checker, when `basic_auth_users` has users.
    pub fn basic_auth(&self) -> Option<Arc<BasicAuth>> {
        self.auth.clone()
    }

    /// Wrap `app` with what the file asks for at the HTTP level: extra response headers, the
    /// rate limit and basic authentication (except on [`UNAUTHENTICATED_PATHS`](super::UNAUTHENTICATED_PATHS)). [`serve`](super::serve())
    /// calls this; call it yourself only when serving by other means.
    pub fn layer(&self, app: Router) -> Router {
        if self.headers.is_empty() && self.rate_limit.is_none() && self.auth.is_none() {
            return app;
        }
        guard_layer(app, self.auth.clone(), self.headers.clone(), self.rate_limit)
    }
}

fn validate_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), WebConfigError> {
    let key = format!("http_server_config.headers.{name}");
    let Some((canonical, allowed)) = ALLOWED_HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)) else {
        let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(h, _)| *h).collect();
        return Err(WebConfigError::new(
            key,
            format!("this header can not be configured (allowed: {})", names.join(", ")),
        ));
    };
    if !allowed.is_empty() && !allowed.contains(&value) {
        return Err(WebConfigError::new(key, format!("invalid value {value:?}, expected one of {allowed:?}")));
    }
    let header_value = HeaderValue::from_str(value)
        .map_err(|_| WebConfigError::new(key.clone(), format!("invalid header value {value:?}")))?;
    let header_name = HeaderName::from_bytes(canonical.as_bytes()).expect("static header name");
    Ok((header_name, header_value))
}

fn validate_bcrypt_hash(hash: &str) -> Result<(), String> {
    let hash = hash.trim();
    let parts: Result<bcrypt::HashParts, _> = hash.parse();
    match parts {
        // bcrypt's costs are 4 to 31; anything else could not be verified (nor the dummy
        // hash for unknown users made at that cost).
        Ok(parts) if !(4..=31).contains(&parts.get_cost()) => {
            Err(format!("bcrypt cost {} is outside 4..=31", parts.get_cost()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!("not a bcrypt hash ({e}); generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::from_yaml_str(yaml, Path::new("/nonexistent"))
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        for text in ["", "# only a comment\n", "{}"] {
            let config = parse(text).unwrap();
            assert!(!config.tls_enabled());
            assert_eq!(config.scheme(), "http");
            assert!(config.basic_auth().is_none());
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let err = parse("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        assert!(err.to_string().contains("tls_server_config"), "{err}");
        assert!(err.to_string().contains("cert_fil"), "{err}");
        let err = parse("basic_auth_user: {}\n").unwrap_err();
        assert!(err.to_string().contains("basic_auth_user"), "{err}");
    }

    #[test]
    fn tls_errors_name_the_key() {
        let err = parse("tls_server_config:\n  key_file: k.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.cert_file");
        let err = parse("tls_server_config:\n  cert_file: c.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.key_file");
        let err = parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.cert_file");
        assert!(err.message.contains("/nonexistent/c.pem"), "{err}");
        let err = parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: Sometimes\n")
            .unwrap_err();
        assert_eq!(err.key, "tls_server_config.client_auth_type");
        let err =
            parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS14\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.min_version");
        let err = parse(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
        )
        .unwrap_err();
        assert_eq!(err.key, "tls_server_config.client_ca_file");
        let err =
            parse("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n").unwrap_err();
        assert_eq!(err.key, "tls_server_config.client_ca_file");
        assert!(err.message.contains("NoClientCert"), "{err}");
    }

    #[test]
    fn bad_hashes_and_headers_are_rejected() {
        let err = parse("basic_auth_users:\n  alice: plaintext\n").unwrap_err();
        assert_eq!(err.key, "basic_auth_users.alice");
        let too_costly = bcrypt::hash("x", 4).unwrap().replacen("$04$", "$99$", 1);
        let err = parse(&format!("basic_auth_users:\n  alice: '{too_costly}'\n")).unwrap_err();
        assert_eq!(err.key, "basic_auth_users.alice");
        let err = parse("http_server_config:\n  headers:\n    X-Powered-By: me\n").unwrap_err();
        assert_eq!(err.key, "http_server_config.headers.X-Powered-By");
        let err = parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").unwrap_err();
        assert_eq!(err.key, "http_server_config.headers.X-Frame-Options");
        assert!(parse("http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n").is_ok());
        let err = parse("rate_limit:\n  interval: 1s\n").unwrap_err();
        assert_eq!(err.key, "rate_limit.burst");
    }
}
