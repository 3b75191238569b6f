//! The web config file (exporter-toolkit format): reads it, assembles it from the sections
//! that tls and auth own, and builds the layers. May import: tls, auth, error (never serve).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use axum::Router;
use rustls::ServerConfig;
use serde::Deserialize;

use crate::auth::{
    guard_layer, parse_basic_auth_users, parse_http_server_config, parse_rate_limit, BasicAuth, RawHttp, RawRateLimit,
    RawUsers,
};
use crate::error::WebConfigError;
use crate::tls::{build_tls, ClientAuthType, RawTls};

/// The file: one key per section, each section's schema in the file that serves it.
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
    basic_auth_users: Option<RawUsers>,
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

        let headers = parse_http_server_config(raw.http_server_config)?;
        let rate_limit = parse_rate_limit(raw.rate_limit)?;
        let auth = parse_basic_auth_users(raw.basic_auth_users)?;

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
    /// rate limit and basic authentication (except on
    /// [`UNAUTHENTICATED_PATHS`](crate::UNAUTHENTICATED_PATHS)). The server loop (`serve`)
    /// calls this; call it yourself only when serving by other means.
    pub fn layer(&self, app: Router) -> Router {
        if self.headers.is_empty() && self.rate_limit.is_none() && self.auth.is_none() {
            return app;
        }
        guard_layer(app, self.auth.clone(), self.headers.clone(), self.rate_limit)
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
